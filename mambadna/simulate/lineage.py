"""Lineage-specific transposon insertions: the signal that makes species learnable.

Neutral substitutions fall anew on every chromosome, so a held-out chromosome carries no
species signal that a model could have learnt from the training chromosomes. Real genomes do:
transposon subfamilies are active on particular lineages (AluYa5/Yb8 and young L1HS copies are
human-specific, others chimpanzee- or orangutan-specific), and their copies land on every
chromosome. A model that learns a lineage's subfamily on the training chromosomes recognises its
copies on the test chromosomes; the longer the window, the likelier it holds one. That is the
context-length trend of the Mamba paper's great apes task.

Insertion events are dropped on the genealogies like the other mutations (so incomplete lineage
sorting is included); the set of species carrying an event names the lineage it occurred on,
and each lineage has its own subfamily consensus per family, derived once per simulation from
the family's master sequence so that every chromosome shares it. About 0.45 insertions per Mb
per million years per lineage matches the ~8,400 human-specific Alu, L1 and SVA insertions in
3.1 Gb over 6 million years.
"""

from __future__ import annotations

import numpy as np

from mambadna.simulate.genome import RepeatFamily, _mutate, _revcomp

# Families that stay active after the species split, with their share of insertions.
ACTIVE = {"Alu": 0.65, "L1": 0.35}
SUBFAMILY_DIVERGENCE = 0.04  # lineage subfamily vs the family master sequence
COPY_DIVERGENCE = 0.01  # young copies: near-identical to their subfamily


class LineageRepeats:
    """Subfamily consensus sequences per (lineage, family), shared by all chromosomes.

    A lineage is a carrier pattern: bit ``j`` set when species ``j`` carries the insertion.
    """

    def __init__(self, families: list[RepeatFamily], seed: np.random.SeedSequence) -> None:
        by_name = {f.name: f for f in families}
        self.families = [by_name[name] for name in ACTIVE]
        self.weights = np.array(list(ACTIVE.values()))
        self.entropy = seed.generate_state(4)
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def consensus(self, pattern: int, family: int) -> np.ndarray:
        """The lineage's subfamily: the family master with lineage-specific substitutions."""
        key = (pattern, family)
        if key not in self._cache:
            rng = np.random.default_rng([*self.entropy, pattern, family])
            master = self.families[family].consensus[0]
            self._cache[key] = _mutate(rng, master, SUBFAMILY_DIVERGENCE)
        return self._cache[key]

    def copies(self, rng: np.random.Generator, patterns: np.ndarray) -> tuple[np.ndarray,
                                                                                np.ndarray]:
        """One inserted copy per event: (concatenated bases, lengths). L1 copies are usually
        5'-truncated like their genomic namesakes; half the copies are on the reverse strand."""
        family = rng.choice(len(self.families), size=len(patterns), p=self.weights)
        pieces, lengths = [], np.zeros(len(patterns), dtype=np.int64)
        for i, (pattern, fam) in enumerate(zip(patterns.tolist(), family.tolist())):
            full = self.consensus(pattern, fam)
            spec = self.families[fam]
            keep = len(full)
            if spec.truncation == "five_prime" and rng.random() > spec.full_length_fraction:
                keep = int(min(len(full), 50 + rng.exponential(spec.truncated_mean - 50)))
            copy = _mutate(rng, full[len(full) - keep:], COPY_DIVERGENCE)
            pieces.append(_revcomp(copy) if rng.random() < 0.5 else copy)
            lengths[i] = keep
        bases = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
        return bases, lengths


def carrier_patterns(carriers: np.ndarray) -> np.ndarray:
    """(n_events, n_species) bool -> (n_events,) int64 bit patterns."""
    weights = 1 << np.arange(carriers.shape[1], dtype=np.int64)
    return carriers.astype(np.int64) @ weights
