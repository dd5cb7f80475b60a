"""The ancestral genome: a realistic, non-i.i.d. sequence that the species evolve from.

Three layers, all generated with vectorised numpy (no per-base Python loop):

1. Background: a 2nd-order Markov chain whose trinucleotide weights come from human-like
   dinucleotide odds ratios (Karlin's "genomic signature": CpG ~0.23, TpA ~0.73, CpA/TpG ~1.2)
   plus A/T homopolymer enrichment. Two scalars (GC bias, CpG factor) are fitted so that the
   chain's stationary composition hits the target GC and CpG observed/expected. GC varies along
   the chromosome in isochore-like domains of ~300 kb.
2. Interspersed repeats: Alu-like (300 bp, GC-rich, poly-A tail), L1-like (6 kb, usually
   5'-truncated), LTR-like and DNA-transposon-like families with subfamilies; every copy diverges
   from its consensus by 5-20 % with transitions favoured and CpG decay (C->T at CpG sites).
3. Microsatellites: tandem repeats of 1-6 bp units with a few impurities.

Bases are coded 0=A 1=C 2=G 3=T (uint8) internally; complement is ``3 - b`` and the transition
partner is ``b ^ 2`` (A<->G, C<->T).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Human-like dinucleotide odds ratios rho(xy) = f(xy) / (f(x) f(y)); reverse-complement symmetric.
# CG is a starting value: the fit below rescales it to the target observed/expected.
_RHO = np.array([
    #  A     C     G     T      (second base)
    [1.12, 0.82, 1.15, 0.87],  # A
    [1.22, 1.20, 0.23, 1.15],  # C
    [1.05, 1.00, 1.20, 0.82],  # G
    [0.73, 1.05, 1.22, 1.12],  # T
])
_HOMOPOLYMER_ODDS = 1.25  # AAA and TTT: poly-A/T tracts are over-represented in primate DNA


@dataclass(frozen=True)
class GenomeConfig:
    """Composition of the ancestral genome. Defaults approximate the human genome."""

    gc: float = 0.415  # mean GC fraction of the non-repeat background
    cpg_oe: float = 0.13  # CpG observed/expected of the background (repeats add some back)
    isochore_offsets: tuple[float, ...] = (-0.04, -0.01, 0.03, 0.09)  # class GC minus ``gc``
    isochore_weights: tuple[float, ...] = (0.35, 0.35, 0.22, 0.08)  # their genome fractions
    isochore_mean_length: int = 300_000  # mean domain length (exponential)
    alu_fraction: float = 0.10  # fraction of the genome in Alu-like copies
    l1_fraction: float = 0.17  # ... L1-like copies
    ltr_fraction: float = 0.08  # ... LTR-like copies
    dna_fraction: float = 0.03  # ... DNA-transposon-like copies
    microsatellite_fraction: float = 0.02  # ... simple tandem repeats
    copy_divergence: tuple[float, float] = (0.05, 0.20)  # per-copy divergence, uniform range
    cpg_decay: float = 10.0  # how much faster CpG sites mutate in repeat copies

    def __post_init__(self) -> None:
        if not 0.2 <= self.gc <= 0.7:
            raise ValueError(f"gc must be in [0.2, 0.7], got {self.gc}")
        if len(self.isochore_offsets) != len(self.isochore_weights):
            raise ValueError("isochore_offsets and isochore_weights must have the same length")
        total = (self.alu_fraction + self.l1_fraction + self.ltr_fraction + self.dna_fraction
                 + self.microsatellite_fraction)
        if not 0.0 <= total <= 0.8:
            raise ValueError(f"repeat fractions must sum to at most 0.8, got {total:.2f}")


# --- the Markov chain ---------------------------------------------------------------------------

def _trinucleotide_weights(gc: float, cpg: float) -> np.ndarray:
    """Unnormalised P(z | x, y) as a (4, 4, 4) array indexed [x, y, z]."""
    base = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    rho = _RHO.copy()
    rho[1, 2] = cpg
    w = base[None, None, :] * rho[None, :, :] * np.ones((4, 1, 1))
    w[0, 0, 0] *= _HOMOPOLYMER_ODDS
    w[3, 3, 3] *= _HOMOPOLYMER_ODDS
    return w


def _stationary_pairs(cond: np.ndarray) -> np.ndarray:
    """Stationary distribution over dinucleotide states (x, y) of a 2nd-order chain, (4, 4)."""
    T = np.zeros((16, 16))
    for x in range(4):
        for y in range(4):
            T[4 * x + y, 4 * y: 4 * y + 4] = cond[x, y]
    # pi T = pi with sum(pi) = 1: replace one balance equation by the normalisation.
    system = T.T - np.eye(16)
    system[-1] = 1.0
    rhs = np.zeros(16)
    rhs[-1] = 1.0
    pi = np.linalg.solve(system, rhs)
    return (pi / pi.sum()).reshape(4, 4)


def composition(pairs: np.ndarray) -> tuple[float, float]:
    """(GC fraction, CpG observed/expected) from dinucleotide frequencies (4, 4)."""
    single = pairs.sum(axis=0)
    gc = float(single[1] + single[2])
    return gc, float(pairs[1, 2] / (single[1] * single[2]))


def fit_chain(gc: float, cpg_oe: float, iterations: int = 60) -> np.ndarray:
    """Conditional probabilities P(z | x, y), (4, 4, 4), whose stationary GC and CpG o/e match.

    Fixed-point fit of two scalars: the GC bias of the base frequencies (on the logit scale)
    and the CpG odds ratio. Converges to ~1e-6 in a few dozen iterations.
    """
    g, c = gc, cpg_oe
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    for _ in range(iterations):
        w = _trinucleotide_weights(g, c)
        cond = w / w.sum(axis=2, keepdims=True)
        got_gc, got_oe = composition(_stationary_pairs(cond))
        g = float(1 / (1 + np.exp(-(logit(g) + logit(gc) - logit(got_gc)))))
        c *= cpg_oe / got_oe
    return cond


def markov_sequence(
    rng: np.random.Generator, length: int, chains: np.ndarray, domain: np.ndarray | None = None,
    segment: int = 2048,
) -> np.ndarray:
    """Sample ``length`` bases from 2nd-order chains, (length,) uint8.

    chains: (n_class, 4, 4, 4) conditional probabilities. The sequence is cut into segments of
    ``segment`` bases sampled in parallel (one vectorised step per position within a segment),
    each segment started from its chain's stationary pairs. domain: (n_segments,) class of each
    segment (isochores); default class 0 everywhere.
    """
    n_seg = max(1, -(-length // segment))
    seg_len = -(-length // n_seg)
    if domain is None:
        domain = np.zeros(n_seg, dtype=np.int64)
    cum = np.cumsum(chains, axis=-1)[..., :3].reshape(len(chains), 16, 3)
    start_pairs = np.stack([_stationary_pairs(c).ravel() for c in chains])
    start_cum = np.cumsum(start_pairs, axis=1)[:, :15]
    u0 = rng.random(n_seg)
    state = (u0[:, None] > start_cum[domain]).sum(axis=1)  # (n_seg,) pair index 4x+y
    out = np.empty((n_seg, seg_len), dtype=np.uint8)
    out[:, 0] = state % 4
    draws = rng.random((seg_len, n_seg))
    for k in range(1, seg_len):
        z = (draws[k][:, None] > cum[domain, state]).sum(axis=1)
        out[:, k] = z
        state = (state % 4) * 4 + z
    return out.ravel()[:length]


def isochore_domains(rng: np.random.Generator, n_segments: int, segment: int,
                     config: GenomeConfig) -> np.ndarray:
    """Class of each segment: runs with exponential lengths, classes drawn by weight."""
    weights = np.asarray(config.isochore_weights, dtype=float)
    mean_run = max(1.0, config.isochore_mean_length / segment)
    n_runs = int(n_segments / mean_run) + 8
    runs = np.maximum(1, rng.exponential(mean_run, n_runs).round().astype(np.int64))
    classes = rng.choice(len(weights), size=n_runs, p=weights / weights.sum())
    domain = np.repeat(classes, runs)
    while len(domain) < n_segments:  # rare: the runs fell short
        domain = np.concatenate([domain, domain])
    return domain[:n_segments]


# --- repeat families ----------------------------------------------------------------------------

@dataclass
class RepeatFamily:
    """A family of interspersed repeats: subfamily consensus sequences and a copy-length law."""

    name: str
    consensus: np.ndarray  # (n_subfamilies, length) uint8
    truncation: str  # "none": full length; "five_prime": copies keep a random 3' part
    truncated_mean: float = 0.0  # mean kept length of truncated copies (five_prime)
    full_length_fraction: float = 1.0  # fraction of copies that are full length
    fraction: float = 0.0  # genome fraction to cover
    lengths: list = field(default_factory=list)


def _mutate(rng: np.random.Generator, seq: np.ndarray, rate: np.ndarray | float,
            cpg: np.ndarray | None = None, cpg_decay: float = 1.0) -> np.ndarray:
    """Substitute bases with probability ``rate`` (per base), transitions 2:1 over transversions.

    cpg: bool mask of bases in a CpG (C of CG or its G); those mutate ``cpg_decay`` times faster
    and always by transition (C->T, G->A: methylated-cytosine deamination).
    """
    rate = np.broadcast_to(np.asarray(rate, dtype=float), seq.shape)
    if cpg is not None:
        rate = np.where(cpg, np.minimum(0.9, rate * cpg_decay), rate)
    hit = rng.random(seq.shape) < rate
    kind = rng.random(seq.shape)
    new = np.where(kind < 2 / 3, seq ^ 2, seq ^ np.where(kind < 5 / 6, 1, 3)).astype(np.uint8)
    if cpg is not None:
        new = np.where(cpg, seq ^ 2, new).astype(np.uint8)
    return np.where(hit, new, seq).astype(np.uint8)


def cpg_mask(seq: np.ndarray) -> np.ndarray:
    """True at both bases of every CG dinucleotide, (L,) bool."""
    cg = (seq[:-1] == 1) & (seq[1:] == 2)
    mask = np.zeros(seq.shape, dtype=bool)
    mask[:-1] |= cg
    mask[1:] |= cg
    return mask


def _revcomp(seq: np.ndarray) -> np.ndarray:
    return (3 - seq[::-1]).astype(np.uint8)


def _subfamilies(rng: np.random.Generator, master: np.ndarray, n: int = 3,
                 spread: float = 0.03) -> np.ndarray:
    """Subfamily consensus sequences: the master plus variants diverged by ``spread``."""
    return np.stack([master] + [_mutate(rng, master, spread) for _ in range(n - 1)])


def repeat_families(rng: np.random.Generator, config: GenomeConfig) -> list[RepeatFamily]:
    """The four interspersed families with consensus sequences shaped like their namesakes."""
    def chain_seq(length: int, gc: float, oe: float) -> np.ndarray:
        return markov_sequence(rng, length, fit_chain(gc, oe)[None])

    poly_a = np.zeros(20, dtype=np.uint8)
    # Alu: two related arms joined by an A-rich linker, ending in a poly-A tail; GC- and CpG-rich.
    arm = chain_seq(120, 0.58, 0.60)
    linker = np.where(rng.random(16) < 0.8, 0, rng.integers(0, 4, 16)).astype(np.uint8)
    arm2 = np.concatenate([_mutate(rng, arm, 0.15), chain_seq(30, 0.55, 0.6)])
    alu = np.concatenate([arm, linker, arm2, poly_a])[:300]
    # L1: 6 kb, AT-rich, poly-A tail; most copies are 5'-truncated.
    l1 = np.concatenate([chain_seq(5980, 0.40, 0.20), poly_a])
    # LTR (solo LTRs): starts TG, ends CA.
    ltr = np.concatenate([[3, 2], chain_seq(446, 0.48, 0.25), [1, 0]]).astype(np.uint8)
    # DNA transposon: terminal inverted repeats around an internal region.
    tir = chain_seq(28, 0.45, 0.25)
    dna = np.concatenate([tir, chain_seq(1244, 0.40, 0.20), _revcomp(tir)])
    return [
        RepeatFamily("Alu", _subfamilies(rng, alu), "none", fraction=config.alu_fraction),
        RepeatFamily("L1", _subfamilies(rng, l1), "five_prime", truncated_mean=900.0,
                     full_length_fraction=0.05, fraction=config.l1_fraction),
        RepeatFamily("LTR", _subfamilies(rng, ltr), "none", fraction=config.ltr_fraction),
        RepeatFamily("DNA", _subfamilies(rng, dna), "five_prime", truncated_mean=700.0,
                     full_length_fraction=0.5, fraction=config.dna_fraction),
    ]


# --- copies and assembly ------------------------------------------------------------------------

def _segment_offsets(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments of ``lengths`` laid end to end: (start of each segment, offset of every
    position within its segment), shapes (n,) and (sum(lengths),)."""
    starts = np.cumsum(lengths) - lengths
    within = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    return starts, within


def family_copies(rng: np.random.Generator, family: RepeatFamily, target_bases: float,
                  config: GenomeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Diverged copies of one family covering ~``target_bases``: (flat bases, lengths)."""
    n_sub, cons_len = family.consensus.shape
    if family.truncation == "five_prime":
        mean_len = (family.full_length_fraction * cons_len
                    + (1 - family.full_length_fraction) * family.truncated_mean)
    else:
        mean_len = cons_len
    n = round(target_bases / mean_len)
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    sub = rng.integers(0, n_sub, n)
    lengths = np.full(n, cons_len, dtype=np.int64)
    if family.truncation == "five_prime":
        kept = 50 + rng.exponential(family.truncated_mean - 50, n).round().astype(np.int64)
        full = rng.random(n) < family.full_length_fraction
        lengths = np.where(full, cons_len, np.minimum(kept, cons_len))
    starts, within = _segment_offsets(lengths)
    pos = np.repeat(cons_len - lengths, lengths) + within  # truncated copies keep the 3' end
    rows = np.repeat(sub, lengths)
    cpg = np.stack([cpg_mask(c) for c in family.consensus])[rows, pos]
    divergence = rng.uniform(*config.copy_divergence, n)
    bases = _mutate(rng, family.consensus[rows, pos], np.repeat(divergence, lengths), cpg,
                    config.cpg_decay)
    # Half the copies sit on the reverse strand: reverse within the copy and complement.
    reverse = np.repeat(rng.random(n) < 0.5, lengths)
    flipped = np.repeat(starts + lengths - 1, lengths) - within
    bases = np.where(reverse, 3 - bases[flipped], bases).astype(np.uint8)
    return bases, lengths


def microsatellites(rng: np.random.Generator, target_bases: float) -> tuple[np.ndarray, np.ndarray]:
    """Tandem repeats of 1-6 bp units (A-rich mononucleotides, CA dinucleotides, ...) with 3 %
    impurities: (flat bases, lengths)."""
    mean_len = 37.0
    n = round(target_bases / mean_len)
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    unit_len = rng.choice(np.arange(1, 7), size=n, p=[0.30, 0.30, 0.10, 0.20, 0.05, 0.05])
    units = rng.integers(0, 4, (n, 6)).astype(np.uint8)
    units[unit_len == 1, 0] = np.where(rng.random(int((unit_len == 1).sum())) < 0.85,
                                       rng.choice([0, 3], int((unit_len == 1).sum())), 1)
    two = unit_len == 2
    units[two, :2] = np.where(rng.random((int(two.sum()), 1)) < 0.6, [1, 0], units[two, :2])
    lengths = rng.integers(15, 60, n).astype(np.int64)
    _, within = _segment_offsets(lengths)
    rows = np.repeat(np.arange(n), lengths)
    bases = units[rows, within % np.repeat(unit_len, lengths)]
    return _mutate(rng, bases, 0.03), lengths


@dataclass
class AncestralChromosome:
    """One ancestral chromosome: bases (L,) uint8 0-3 and a repeat mask (L,) bool."""

    bases: np.ndarray
    repeat_mask: np.ndarray
    repeat_bases: dict  # family name -> bases covered


def _drop_to_fit(lengths: np.ndarray, limit: int) -> np.ndarray:
    """Indices of copies kept so that their total length stays within ``limit`` (short
    chromosomes cannot hold a full L1)."""
    keep = np.arange(len(lengths))
    keep = keep[lengths[keep] <= limit]
    while lengths[keep].sum() > limit:
        keep = keep[:-1]
    return keep


def ancestral_chromosome(rng: np.random.Generator, length: int, config: GenomeConfig,
                         families: list[RepeatFamily], chains: np.ndarray,
                         segment: int = 2048) -> AncestralChromosome:
    """Background chain + repeat copies inserted at uniform random points, exactly ``length``."""
    pieces, lens, names = [], [], []
    sources = [(f.name, lambda f=f: family_copies(rng, f, f.fraction * length, config))
               for f in families]
    sources.append(("microsatellite",
                    lambda: microsatellites(rng, config.microsatellite_fraction * length)))
    for _, make in sources:
        flat, lengths = make()
        pieces.append(flat)
        lens.append(lengths)
        names.append(np.full(len(lengths), len(names)))
    flat, lengths, family = np.concatenate(pieces), np.concatenate(lens), np.concatenate(names)
    starts = np.cumsum(lengths) - lengths
    # Shuffle the copies so families interleave, dropping some if the chromosome is tiny.
    order = rng.permutation(len(lengths))
    order = order[_drop_to_fit(lengths[order], int(0.8 * length))]
    lengths, starts, family = lengths[order], starts[order], family[order]
    copy_starts, within = _segment_offsets(lengths)
    repeats = flat[np.repeat(starts, lengths) + within]
    background_len = length - int(lengths.sum())
    n_seg = max(1, -(-background_len // segment))
    domain = isochore_domains(rng, n_seg, segment, config)
    background = markov_sequence(rng, background_len, chains, domain, segment)
    # Copy j lands after ``insert[j]`` background bases, behind the copies inserted before it.
    insert = np.sort(rng.integers(0, background_len + 1, len(lengths)))
    out_pos = np.repeat(insert + copy_starts, lengths) + within
    bases = np.empty(length, dtype=np.uint8)
    mask = np.zeros(length, dtype=bool)
    mask[out_pos] = True
    bases[out_pos] = repeats
    bases[~mask] = background
    covered = {name: int(lengths[family == i].sum()) for i, (name, _) in enumerate(sources)}
    return AncestralChromosome(bases, mask, covered)


def background_chains(config: GenomeConfig) -> np.ndarray:
    """One fitted chain per isochore class, (n_class, 4, 4, 4)."""
    return np.stack([fit_chain(config.gc + off, config.cpg_oe) for off in config.isochore_offsets])
