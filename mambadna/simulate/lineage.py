"""Lineage-specific signals: what lets a model tell species apart on a held-out chromosome.

Neutral substitutions fall anew on every chromosome, so a held-out chromosome carries no
species signal that a model could have learnt from the training chromosomes. Real genomes do,
because some processes are specific to a lineage and act on the whole genome at once. Two are
simulated here; both are shared by every chromosome, so what a model learns on the training
chromosomes holds on the test chromosome.

1. Transposon subfamilies (``LineageRepeats``, on by default at the real rate). Subfamilies are
   active on particular lineages (AluYa5/Yb8 and young L1HS copies are human-specific, others
   chimpanzee- or orangutan-specific), and their copies land on every chromosome. A model that
   learns a lineage's subfamily on the training chromosomes recognises its copies on the test
   chromosomes; the longer the window, the likelier it holds one: the context-length trend of
   the Mamba paper's great apes task. Insertion events are dropped on the genealogies like the
   other mutations (so incomplete lineage sorting is included); the set of species carrying an
   event (its carrier pattern) names the lineage it occurred on, and each lineage has its own
   subfamily consensus per family, derived once per simulation from the family's master sequence.
   About 0.45 insertions per Mb per million years per lineage matches the ~8,400 human-specific
   Alu, L1 and SVA insertions in 3.1 Gb over 6 million years: ~3 per Mb on the human branch, so
   at the real rate a 300 kb genome holds a handful and a window of a few kb almost never one
   (as in the real task, where accuracy at 1-16 kb is near chance). ``insertion_rate`` raises it.

2. Substitution signatures (``LineageSpectra``, off by default). Mutation spectra differ between
   lineages: the human TCC->TTC pulse (Harris 2015), and great-ape spectra that differ by
   species (Goldberg & Harris 2022). Each branch of the species tree gets one signature, a
   trinucleotide-context substitution (the human branch TCC->TTC, the others drawn by the seed
   from the 84 classes outside CpG sites, all different), and on that branch each matching site
   (either strand) takes it at ``spectrum_bias`` times the per-base substitution rate, on top of
   the neutral process; the branch's descendants inherit the change (fixed on the branch).
   Realistic biases are small (a class 20-50 % faster on one lineage: 0.1-0.3), too small to
   matter at these genome sizes, so the default is 0 (a lineage-independent spectrum). At ~100 a
   lineage's signature hits a sizeable share of its matching sites (~1 in 30 bases): a dense
   compositional signal that every window carries, unlike the sparse transposon copies.

Measured with a 6-mer naive Bayes trained on the training chromosomes and scored on windows of
the test chromosome (human vs orangutan, 300 kb, seed 0; balanced accuracy at 256 / 1024 /
4096 bases): real rates 0.53 / 0.50 / 0.50 (2-3 insertions per species: chance, as it should
be); insertion_rate 1000: 0.95 / 0.99 / 1.0; insertion_rate 300 with spectrum_bias 100:
0.94 / 1.0 / 1.0. For all five great apes at insertion_rate 1000 (1 Mb) the accuracy rises from
0.56 at 256 bases to 0.84 at 4 kb and 0.97 at 16 kb, chimpanzee and bonobo (1 Myr apart)
being the last to separate: the Mamba paper's context-length trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from mambadna.simulate.genome import RepeatFamily, _mutate, _revcomp

# Families that stay active after the species split, with their share of insertions.
ACTIVE = {"Alu": 0.65, "L1": 0.35}
SUBFAMILY_DIVERGENCE = 0.04  # lineage subfamily vs the family master sequence
COPY_DIVERGENCE = 0.01  # young copies: near-identical to their subfamily
_CODE = {b: i for i, b in enumerate("ACGT")}
# Signatures known by name; the other branches draw theirs. TCC->TTC: the human pulse.
KNOWN_SIGNATURES = {"human": "TCC>TTC"}


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


# --- substitution signatures ---------------------------------------------------------------------

@dataclass(frozen=True)
class Branch:
    """A branch of the species tree (a population of the msprime demography), in generations
    before the present: from ``start`` (its own split, 0 for a leaf) back to ``end`` (its split
    from the parent)."""

    name: str  # the population (a leaf's species name, or msprime's "pop_K" inside the tree)
    leaves: frozenset[str]  # the species that descend from it
    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def species_branches(demography) -> list[Branch]:
    """Every branch of the species tree behind an msprime demography, root excluded."""
    start = {pop.name: 0.0 for pop in demography.populations}
    end, children = {}, {}
    for event in demography.events:
        if hasattr(event, "derived") and hasattr(event, "ancestral"):
            start[event.ancestral] = float(event.time)
            children[event.ancestral] = list(event.derived)
            for name in event.derived:
                end[name] = float(event.time)

    def leaves(name: str) -> frozenset[str]:
        if name not in children:
            return frozenset([name])
        return frozenset().union(*(leaves(child) for child in children[name]))

    return [Branch(pop.name, leaves(pop.name), start[pop.name], end[pop.name])
            for pop in demography.populations if pop.name in end]


def _classes() -> list[str]:
    """The 84 pyrimidine-centred substitution classes outside CpG sites, e.g. 'TCC>TTC'.

    CpG sites are left out: their transitions are the clock-like process every lineage shares,
    and CpG depletion leaves so few of them that a CpG signature would carry almost no signal.
    """
    return [f"{a}{r}{b}>{a}{x}{b}" for r in "CT" for x in "ACGT" if x != r
            for a, b in product("ACGT", repeat=2) if not (r == "C" and b == "G")]


def _parse(signature: str) -> tuple[int, int, int, int]:
    """'TCC>TTC' -> codes (left, ref, right, alt)."""
    before, after = signature.split(">")
    return _CODE[before[0]], _CODE[before[1]], _CODE[before[2]], _CODE[after[1]]


class LineageSpectra:
    """One substitution signature per species-tree branch, shared by all chromosomes."""

    def __init__(self, demography, seed: np.random.SeedSequence) -> None:
        self.branches = species_branches(demography)
        rng = np.random.default_rng(seed)
        known = {b.name: KNOWN_SIGNATURES[b.name] for b in self.branches
                 if b.name in KNOWN_SIGNATURES}
        others = [b.name for b in self.branches if b.name not in known]
        pool = [c for c in _classes() if c not in known.values()]
        # Distinct signatures while the 84 classes last (then they repeat: a tree that large).
        drawn = np.resize(rng.permutation(pool), len(others)).tolist()
        self.signatures: dict[str, str] = {**known, **dict(zip(others, drawn))}

    def substitutions(self, rng: np.random.Generator, bases: np.ndarray, species: list[str],
                      rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signature substitutions of one ancestral chromosome for the sampled species.

        rate: per matching site per generation. Returns positions (n,) int64 sorted, alleles
        (n, n_species) uint8 and the branch of each, (n,) int64 indices into ``branches``.
        Branches are taken oldest first and a site takes one change only: a younger branch no
        longer finds its context there.
        """
        n_sp = len(species)
        taken = np.zeros(len(bases), dtype=bool)
        positions, alleles, branch_of = [], [], []
        for index in sorted(range(len(self.branches)), key=lambda i: -self.branches[i].end):
            branch = self.branches[index]
            carriers = np.array([name in branch.leaves for name in species])
            if not carriers.any() or carriers.all():
                continue  # the branch separates none of the sampled species
            site, alt = _matches(bases, _parse(self.signatures[branch.name]))
            hit = (rng.random(len(site)) < -np.expm1(-rate * branch.length)) & ~taken[site]
            site, alt = site[hit], alt[hit]
            taken[site] = True
            row = np.repeat(bases[site][:, None], n_sp, axis=1)
            row[:, carriers] = alt[:, None]
            positions.append(site)
            alleles.append(row)
            branch_of.append(np.full(len(site), index))
        if not positions:
            return np.zeros(0, np.int64), np.zeros((0, n_sp), np.uint8), np.zeros(0, np.int64)
        pos = np.concatenate(positions)
        order = np.argsort(pos, kind="stable")
        return (pos[order].astype(np.int64), np.concatenate(alleles)[order].astype(np.uint8),
                np.concatenate(branch_of)[order].astype(np.int64))


def _matches(bases: np.ndarray, signature: tuple[int, int, int, int]) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Centre positions of the signature's context on either strand and the new base there."""
    left, ref, right, alt = signature
    mid = bases[1:-1]
    forward = (bases[:-2] == left) & (mid == ref) & (bases[2:] == right)
    reverse = (bases[:-2] == 3 - right) & (mid == 3 - ref) & (bases[2:] == 3 - left)
    site = np.flatnonzero(forward | reverse) + 1
    new = np.where(forward[site - 1], alt, 3 - alt).astype(np.uint8)
    return site.astype(np.int64), new
