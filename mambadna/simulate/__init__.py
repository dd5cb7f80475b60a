"""Simulated genomes of related species (msprime along a species tree) for demos and tests.

``simulate_species(out_dir, ...)`` is the entry point; see core.py for the output layout and
splits, genome.py for the ancestral genome model and evolve.py for the evolutionary model.
"""

from mambadna.simulate.core import (
    SPLITS,
    SimulationConfig,
    SimulationResult,
    parse_species,
    simulate_species,
    summary,
)
from mambadna.simulate.evolve import GREAT_APES, GREAT_APES_TREE, EvolutionConfig
from mambadna.simulate.genome import GenomeConfig

__all__ = [
    "GREAT_APES",
    "GREAT_APES_TREE",
    "SPLITS",
    "EvolutionConfig",
    "GenomeConfig",
    "SimulationConfig",
    "SimulationResult",
    "parse_species",
    "simulate_species",
    "summary",
]
