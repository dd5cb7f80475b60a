"""Evolve the ancestral genome along a species tree with msprime: substitutions and small indels.

For each chromosome: the coalescent with recombination under the species-tree demography gives
the genealogies of one haploid genome per species; msprime then drops finite-sites substitutions
(HKY, transitions:transversions 2:1) and, separately, indel events on those genealogies. Each
variant is applied onto the ancestral sequence, so a site's ancestral allele is always the
ancestral genome's base. On top come the lineage-specific signals of lineage.py, the only ones a
held-out chromosome shares with the training chromosomes: transposon insertions (dropped on the
same genealogies as presence/absence events) and, when ``spectrum_bias`` > 0, each branch's
substitution signature (fixed on its branch of the species tree).

msprime draws its own random ancestral allele at each site. We map the drawn alleles onto ours
with ``b -> b XOR (drawn XOR ours)`` (bases coded A0 C1 G2 T3): a bijection that sends the drawn
ancestral allele to our base and keeps transition pairs (A<->G, C<->T) together, so the
substitution process keeps its statistics.

msprime is imported inside functions, through ``import_msprime``: it is the optional extra
``mambadna[simulate]`` (pulled in by ``[demo]`` and ``[dev]``), and a missing one is a ConfigError
naming the extra, not an ImportError traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mambadna.errors import ConfigError
from mambadna.simulate.lineage import LineageRepeats, LineageSpectra, carrier_patterns

GREAT_APES = ("human", "chimpanzee", "bonobo", "gorilla", "orangutan")
# Split times in million years (science notes): orangutan 16, gorilla 9, human 6, chimp/bonobo 1.
GREAT_APES_TREE = "(((human:6,(chimpanzee:1,bonobo:1):5):3,gorilla:9):7,orangutan:16);"


def import_msprime():
    """The msprime module, or a ConfigError saying which extra installs it."""
    try:
        import msprime
    except ImportError:
        raise ConfigError("simulating genomes needs msprime, which is not installed",
                          fix="pip install 'mambadna[simulate]' (or pip install msprime)"
                          ) from None
    return msprime


@dataclass(frozen=True)
class EvolutionConfig:
    """Population-genetic parameters. Defaults: great apes (science notes)."""

    tree: str = GREAT_APES_TREE  # Newick species tree, ultrametric, branch lengths in time_units
    time_units: str = "myr"  # "myr" (million years), "yr" or "gen" (generations)
    generation_time: float = 25.0  # years per generation
    population_size: float = 10_000  # Ne of every branch (diploid individuals)
    mutation_rate: float = 1.25e-8  # substitutions per base per generation
    recombination_rate: float = 1e-8  # per base per generation
    divergence_scale: float = 1.0  # multiplies mutation and indel rates (task difficulty)
    kappa: float = 4.0  # HKY transition/transversion rate ratio (Ts/Tv = kappa / 2)
    indel_ratio: float = 0.1  # indel events per substitution
    indel_length_p: float = 0.5  # geometric parameter of indel lengths
    indel_max_length: int = 10  # indel lengths are truncated to 1..indel_max_length
    insertion_rate: float = 0.45  # lineage-specific transposon insertions per Mb per Myr
    spectrum_bias: float = 0.0  # rate of each branch's signature at its sites / substitution rate

    def __post_init__(self) -> None:
        if self.time_units not in ("myr", "yr", "gen"):
            raise ConfigError(f"time_units must be 'myr', 'yr' or 'gen', got {self.time_units!r}")
        if not self.divergence_scale > 0:
            raise ConfigError(f"divergence_scale must be > 0, got {self.divergence_scale}",
                              fix="use e.g. 0.5 for a harder task or 5 for an easier one")
        for name in ("generation_time", "population_size", "mutation_rate", "kappa"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if min(self.recombination_rate, self.indel_ratio, self.insertion_rate,
               self.spectrum_bias) < 0:
            raise ConfigError("recombination_rate, indel_ratio, insertion_rate and spectrum_bias "
                              "must be >= 0")

    def insertion_rate_per_generation(self) -> float:
        """Transposon insertions per base per generation (scaled like the mutation rate).

        insertion_rate is per Mb (1e6 bases) per Myr (1e6 years): per base per year it is
        insertion_rate * 1e-12, per generation that times generation_time; msprime's time unit
        is the generation whatever the tree's time_units.
        """
        per_year = self.insertion_rate * 1e-6 / 1e6
        return per_year * self.generation_time * self.divergence_scale

    def signature_rate_per_generation(self) -> float:
        """Signature substitutions per matching site per generation on a branch."""
        return self.spectrum_bias * self.mutation_rate * self.divergence_scale


def species_demography(config: EvolutionConfig):
    """(msprime.Demography, leaf names in tree order) for the species tree."""
    msprime = import_msprime()

    try:
        demography = msprime.Demography.from_species_tree(
            config.tree, config.population_size, time_units=config.time_units,
            generation_time=None if config.time_units == "gen" else config.generation_time)
    except Exception as err:  # msprime raises ValueError/newick errors with a clear text
        raise ConfigError(f"invalid species tree {config.tree!r}: {err}",
                          fix="give an ultrametric Newick tree with named leaves and branch "
                              "lengths, e.g. '((a:1,b:1):2,c:3);'") from None
    ancestral = {event.ancestral for event in demography.events if hasattr(event, "ancestral")}
    leaves = [pop.name for pop in demography.populations if pop.name not in ancestral]
    return demography, leaves


@dataclass
class ChromosomeVariants:
    """The variants of one chromosome, in ancestral coordinates (0-based).

    sub_positions (n_sub,) int64 and sub_alleles (n_sub, n_species) uint8 (0-3): the base of
    each species at each substitution site. indel_positions (n_indel,) int64, indel_is_insertion
    (n_indel,) bool, indel_lengths (n_indel,) int64, inserted (sum of insertion lengths,) uint8
    in event order, indel_carriers (n_indel, n_species) bool, indel_is_repeat (n_indel,) bool:
    a lineage-specific transposon copy (soft-masked). A deletion at p removes [p, p + length);
    an insertion at p adds its bases after base p. signature_hits: the substitutions of each
    species-tree branch's signature (included in the sub_ arrays), by branch name.
    """

    sub_positions: np.ndarray
    sub_alleles: np.ndarray
    indel_positions: np.ndarray
    indel_is_insertion: np.ndarray
    indel_lengths: np.ndarray
    inserted: np.ndarray
    indel_carriers: np.ndarray
    indel_is_repeat: np.ndarray | None = None
    signature_hits: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.indel_is_repeat is None:
            self.indel_is_repeat = np.zeros(len(self.indel_positions), dtype=bool)


def _msprime_seed(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0]) % (2**31 - 2) + 1


def _indel_shapes(rng: np.random.Generator, n: int, config: EvolutionConfig):
    """Kinds (True = insertion) and lengths (1..max, geometric) of ``n`` indel events."""
    is_insertion = rng.random(n) < 0.5
    lengths = rng.geometric(config.indel_length_p, n)
    too_long = lengths > config.indel_max_length
    while too_long.any():  # truncate by redrawing: keeps the geometric shape below the cap
        lengths[too_long] = rng.geometric(config.indel_length_p, int(too_long.sum()))
        too_long = lengths > config.indel_max_length
    return is_insertion, lengths.astype(np.int64)


def _inserted_bases(rng: np.random.Generator, bases: np.ndarray, positions: np.ndarray,
                    lengths: np.ndarray) -> np.ndarray:
    """Inserted sequence of each insertion, concatenated: half are tandem duplications of the
    bases that follow (the commonest small insertions), half random bases."""
    starts = np.cumsum(lengths) - lengths
    within = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    source = np.minimum(np.repeat(positions + 1, lengths) + within, len(bases) - 1)
    duplicate = np.repeat(rng.random(len(lengths)) < 0.5, lengths)
    random = rng.integers(0, 4, len(within)).astype(np.uint8)
    return np.where(duplicate, bases[source], random).astype(np.uint8)


def _binary_events(ts, rate: float, seed: np.random.SeedSequence):
    """Presence/absence events on the genealogies: (positions, carriers (n, n_species) bool)."""
    msprime = import_msprime()

    events = msprime.sim_mutations(ts, rate=rate, model=msprime.BinaryMutationModel(),
                                   random_seed=_msprime_seed(seed), discrete_genome=True)
    positions = events.tables.sites.position.astype(np.int64)
    return positions, events.genotype_matrix(alleles=("0", "1")) == 1


def evolve_chromosome(bases: np.ndarray, species: list[str], demography, config: EvolutionConfig,
                      seed: np.random.SeedSequence,
                      lineage: LineageRepeats | None = None,
                      spectra: LineageSpectra | None = None) -> ChromosomeVariants:
    """Simulate one chromosome's genealogies and variants for one haploid genome per species.

    lineage: the lineage-specific transposon subfamilies (shared by all chromosomes); None
    leaves out transposon insertions. spectra: the branches' substitution signatures; None (or
    spectrum_bias 0) leaves them out.
    """
    msprime = import_msprime()

    # A sixth child leaves the first five (and so every output without signatures) unchanged.
    ancestry_seed, sub_seed, indel_seed, shape_seed, te_seed, sig_seed = seed.spawn(6)
    ts = msprime.sim_ancestry(
        samples=[msprime.SampleSet(1, population=name, ploidy=1) for name in species],
        demography=demography, sequence_length=len(bases), ploidy=2,
        recombination_rate=config.recombination_rate, random_seed=_msprime_seed(ancestry_seed))
    rate = config.mutation_rate * config.divergence_scale
    subs = msprime.sim_mutations(ts, rate=rate, model=msprime.HKY(kappa=config.kappa),
                                 random_seed=_msprime_seed(sub_seed), discrete_genome=True)
    positions = subs.tables.sites.position.astype(np.int64)
    drawn = _codes(subs.tables.sites.ancestral_state)
    genotypes = subs.genotype_matrix(alleles=("A", "C", "G", "T")).astype(np.uint8)
    alleles = genotypes ^ (drawn ^ bases[positions])[:, None]
    hits: dict[str, int] = {}
    if spectra is not None and config.spectrum_bias > 0:
        positions, alleles, hits = _add_signatures(
            positions, alleles, spectra, np.random.default_rng(sig_seed), bases, species,
            config.signature_rate_per_generation())

    indel_positions, carriers = _binary_events(ts, rate * config.indel_ratio, indel_seed)
    rng = np.random.default_rng(shape_seed)
    is_insertion, lengths = _indel_shapes(rng, len(indel_positions), config)
    inserted = _inserted_bases(rng, bases, indel_positions[is_insertion], lengths[is_insertion])
    is_repeat = np.zeros(len(indel_positions), dtype=bool)
    if lineage is not None and config.insertion_rate > 0:
        te_positions, te_carriers = _binary_events(ts, config.insertion_rate_per_generation(),
                                                   te_seed)
        informative = te_carriers.any(axis=1) & ~te_carriers.all(axis=1)
        te_positions, te_carriers = te_positions[informative], te_carriers[informative]
        te_bases, te_lengths = lineage.copies(np.random.default_rng(te_seed),
                                              carrier_patterns(te_carriers))
        indel_positions = np.concatenate([indel_positions, te_positions])
        carriers = np.concatenate([carriers, te_carriers])
        is_insertion = np.concatenate([is_insertion, np.ones(len(te_positions), dtype=bool)])
        lengths = np.concatenate([lengths, te_lengths])
        inserted = np.concatenate([inserted, te_bases])
        is_repeat = np.concatenate([is_repeat, np.ones(len(te_positions), dtype=bool)])
    return ChromosomeVariants(positions, alleles.astype(np.uint8), indel_positions, is_insertion,
                              lengths, inserted, carriers, is_repeat, hits)


def _add_signatures(positions: np.ndarray, alleles: np.ndarray, spectra: LineageSpectra,
                    rng: np.random.Generator, bases: np.ndarray, species: list[str],
                    rate: float) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Append the branches' signature substitutions at the sites msprime left alone (a site
    keeps one history: the ~1 % that coincide with a neutral site keep the neutral one)."""
    sig_positions, sig_alleles, branch_of = spectra.substitutions(rng, bases, species, rate)
    free = ~np.isin(sig_positions, positions)
    counts = np.bincount(branch_of[free], minlength=len(spectra.branches))
    hits = {b.name: int(n) for b, n in zip(spectra.branches, counts) if n}
    return (np.concatenate([positions, sig_positions[free]]),
            np.concatenate([alleles, sig_alleles[free]]), hits)


def _codes(states: np.ndarray) -> np.ndarray:
    """msprime's single-letter ancestral states (ASCII bytes) -> codes 0-3."""
    table = np.zeros(256, dtype=np.uint8)
    table[np.frombuffer(b"ACGT", np.uint8)] = np.arange(4, dtype=np.uint8)
    return table[np.asarray(states, dtype=np.uint8)]


@dataclass
class SpeciesChromosome:
    """One species' chromosome: bases (L',) uint8 0-3, repeat mask (L',) bool, and the map
    from ancestral positions to this species' positions for the requested cut points."""

    bases: np.ndarray
    repeat_mask: np.ndarray
    cuts: np.ndarray
    keep: np.ndarray  # (L,) bool: ancestral bases not deleted in this species


def apply_variants(bases: np.ndarray, repeat_mask: np.ndarray, variants: ChromosomeVariants,
                   index: int, cuts: np.ndarray | None = None) -> SpeciesChromosome:
    """Build species ``index``'s chromosome from the ancestral one.

    cuts: ancestral positions q; returns where they land in the species sequence (the species
    position of the first base at or after ancestral q), so that held-out regions stay
    homologous across species.
    """
    length = len(bases)
    seq = bases.copy()
    seq[variants.sub_positions] = variants.sub_alleles[:, index]
    carried = variants.indel_carriers[:, index]
    dele = carried & ~variants.indel_is_insertion
    # Deletions: mark [p, p + len) with a difference array, no loop over events.
    marks = np.zeros(length + 1, dtype=np.int64)
    np.add.at(marks, variants.indel_positions[dele], 1)
    np.add.at(marks, np.minimum(variants.indel_positions[dele] + variants.indel_lengths[dele],
                                length), -1)
    keep = np.cumsum(marks[:-1]) == 0
    # Insertions after a kept base p go in front of kept position count(keep[:p + 1]).
    ins_all = variants.indel_is_insertion
    ins_len_all = variants.indel_lengths[ins_all]
    ins_offsets = np.cumsum(ins_len_all) - ins_len_all
    ins_pos = variants.indel_positions[ins_all]
    chosen = carried[ins_all] & keep[ins_pos]
    kept_before = np.cumsum(keep)
    at = np.repeat(kept_before[ins_pos[chosen]], ins_len_all[chosen])
    pieces = np.repeat(ins_offsets[chosen], ins_len_all[chosen]) + _within(ins_len_all[chosen])
    new_bases = np.insert(seq[keep], at, variants.inserted[pieces])
    ins_repeat = variants.indel_is_repeat[ins_all][chosen]
    mask_fill = np.repeat(repeat_mask[ins_pos[chosen]] | ins_repeat, ins_len_all[chosen])
    new_mask = np.insert(repeat_mask[keep], at, mask_fill)
    mapped = np.zeros(0, dtype=np.int64)
    if cuts is not None:
        cuts = np.asarray(cuts, dtype=np.int64)
        order = np.argsort(ins_pos[chosen], kind="stable")
        ins_sorted = ins_pos[chosen][order]
        ins_cum = np.concatenate([[0], np.cumsum(ins_len_all[chosen][order])])
        kept = np.where(cuts > 0, kept_before[np.maximum(cuts - 1, 0)], 0)
        mapped = kept + ins_cum[np.searchsorted(ins_sorted, cuts, side="left")]
    return SpeciesChromosome(new_bases, new_mask, mapped, keep)


def _within(lengths: np.ndarray) -> np.ndarray:
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
