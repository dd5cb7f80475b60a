"""simulate_species: genomes of related species for demos, tests and benchmarks.

An ancestral genome (genome.py) evolves along a species tree (evolve.py): substitutions, small
indels, lineage-specific transposon insertions and, optionally, lineage-specific substitution
signatures (lineage.py: the species signals that carry across chromosomes). Each species gets a
haploid genome written as ``<species>.fa`` (records chr1..chrK) plus per-split FASTA files and a
manifest for finetuning. Deterministic by seed.

What a classifier can learn on the training chromosomes and use on a held-out one is only what
acts on the whole genome of a lineage: its transposon subfamilies' copies (``insertion_rate``,
realistic 0.45 per Mb per Myr: a handful per species in a few hundred kb, so windows of a few kb
stay near chance as in the real task) and its substitution signature (``spectrum_bias``, 0 by
default). Both knobs, and ``divergence_scale`` which multiplies every rate, make the task easier
for demos; ``simulation.json`` records what each lineage received.

Splits hold out whole chromosomes when there are at least three: the last chromosome is test,
the one before it val, the rest train. With one or two chromosomes each chromosome is cut into
three disjoint regions: the first 80 % train, the next 10 % val, the last 10 % test. The cut
points are ancestral positions mapped through each species' indels, so a held-out region is
the same homologous region in every species. Region records are named ``chr1:START-END`` in
samtools' notation (1-based, inclusive; ``mambadna.regions``) in that species' chromosome, so
``samtools faidx human.fa chr1:START-END`` returns the record's bases.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from mambadna._version import __version__
from mambadna.atomic import atomic_directory
from mambadna.errors import ConfigError
from mambadna.progress import bar
from mambadna.regions import format_region
from mambadna.simulate.evolve import (
    GREAT_APES_TREE,
    EvolutionConfig,
    apply_variants,
    evolve_chromosome,
    import_msprime,
    species_demography,
)
from mambadna.simulate.genome import (
    GenomeConfig,
    ancestral_chromosome,
    background_chains,
    repeat_families,
)
from mambadna.simulate.lineage import LineageRepeats, LineageSpectra, carrier_patterns
from mambadna.simulate.output import (
    check_replaceable,
    to_letters,
    write_checksums,
    write_fasta,
    write_json,
    write_manifest,
)

SPLITS = ("train", "val", "test")
MIN_CHROMOSOME = 1_000  # bases; shorter chromosomes cannot hold three split regions
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``simulate_species`` builds one from its keyword arguments."""

    species: tuple[str, ...] | None = None  # leaf names to sample (default: all leaves)
    n_species: int | None = None  # or: the first n leaves of the tree
    length: int = 1_000_000  # bases per ancestral genome (species differ slightly by indels)
    n_chromosomes: int = 4  # chromosomes chr1..chrK, chr1 longest (lengths K : K-1 : ... : 1)
    tree: str | None = None  # Newick species tree; None: the great apes
    time_units: str = "myr"  # branch-length units of the tree: myr, yr or gen
    divergence_scale: float = 1.0  # multiplies substitution, indel and insertion rates
    insertion_rate: float = 0.45  # lineage-specific transposon insertions per Mb per Myr
    spectrum_bias: float = 0.0  # each branch's signature rate at its sites / substitution rate
    seed: int = 0
    softmask: bool = False  # write repeats in lowercase (as UCSC/Ensembl soft-masked FASTA)
    val_fraction: float = 0.1  # region splits (1-2 chromosomes) only
    test_fraction: float = 0.1  # region splits (1-2 chromosomes) only
    genome: GenomeConfig = field(default_factory=GenomeConfig)

    def __post_init__(self) -> None:
        if self.species is not None and self.n_species is not None:
            raise ConfigError("give species names or n_species, not both")
        if self.n_chromosomes < 1:
            raise ConfigError(f"n_chromosomes must be >= 1, got {self.n_chromosomes}")
        k = self.n_chromosomes
        needed = MIN_CHROMOSOME * k * (k + 1) // 2  # the shortest chromosome gets 1 / sum(1..k)
        if self.length < needed:
            raise ConfigError(f"length {self.length} is too short for {k} chromosomes",
                              fix=f"use length >= {needed} or fewer chromosomes")
        if not (self.val_fraction > 0 and self.test_fraction > 0
                and self.val_fraction + self.test_fraction < 0.9):
            raise ConfigError("val_fraction and test_fraction must be > 0 and sum below 0.9")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")

    def evolution(self) -> EvolutionConfig:
        return EvolutionConfig(tree=self.tree or GREAT_APES_TREE, time_units=self.time_units,
                               divergence_scale=self.divergence_scale,
                               insertion_rate=self.insertion_rate,
                               spectrum_bias=self.spectrum_bias)

    def chromosome_lengths(self) -> list[int]:
        """Ancestral lengths, proportional to K, K-1, ..., 1 and summing to ``length``."""
        k = self.n_chromosomes
        weights = np.arange(k, 0, -1, dtype=float)
        lengths = np.floor(self.length * weights / weights.sum()).astype(int)
        lengths[0] += self.length - lengths.sum()
        return [int(x) for x in lengths]


@dataclass
class SimulationResult:
    """Where the simulation went and what it produced."""

    out_dir: Path
    fasta: dict[str, Path]  # species -> <species>.fa (all chromosomes)
    split_fasta: dict[str, dict[str, Path]]  # species -> split -> <species>.<split>.fa
    manifest: Path  # manifest.tsv (path, label, split)
    params: dict  # the JSON record written to simulation.json
    divergence: dict[str, float]  # "human-chimpanzee" -> substitutions per aligned base


def _select_species(config: SimulationConfig, leaves: list[str]) -> list[str]:
    if config.species is not None:
        unknown = [s for s in config.species if s not in leaves]
        if unknown or not config.species:
            raise ConfigError(f"unknown species {unknown}; the tree has {leaves}",
                              fix="pick names from the tree or give --tree")
        if len(set(config.species)) != len(config.species):
            raise ConfigError(f"species listed twice: {list(config.species)}")
        chosen = list(config.species)
    elif config.n_species is not None:
        if not 1 <= config.n_species <= len(leaves):
            raise ConfigError(f"n_species must be in 1..{len(leaves)} for this tree, got "
                              f"{config.n_species}", fix="give --tree with more leaves")
        chosen = leaves[: config.n_species]
    else:
        chosen = leaves
    bad = [s for s in chosen if not _NAME.match(s)]
    if bad:
        raise ConfigError(f"species names {bad} cannot be file names",
                          fix="use letters, digits, '_' and '-' in the tree's leaf names")
    return chosen


def _split_layout(config: SimulationConfig, lengths: list[int]) -> dict[int, list]:
    """For each chromosome index: [(split, ancestral start, ancestral end)]."""
    k = len(lengths)
    if k >= 3:
        split_of = ["train"] * (k - 2) + ["val", "test"]
        return {i: [(split_of[i], 0, n)] for i, n in enumerate(lengths)}
    layout = {}
    for i, n in enumerate(lengths):
        q1 = round(n * (1 - config.val_fraction - config.test_fraction))
        q2 = round(n * (1 - config.test_fraction))
        layout[i] = [("train", 0, q1), ("val", q1, q2), ("test", q2, n)]
    return layout


def _composition(chromosomes: list[np.ndarray]) -> dict:
    bases = np.concatenate(chromosomes)
    counts = np.bincount(bases, minlength=4) / len(bases)
    cpg = np.mean((bases[:-1] == 1) & (bases[1:] == 2))
    return {"gc": round(float(counts[1] + counts[2]), 4),
            "cpg_observed_expected": round(float(cpg / (counts[1] * counts[2])), 4)}


class _DivergenceCounter:
    """Substitution differences per aligned ancestral base, summed over chromosomes."""

    def __init__(self, species: list[str]) -> None:
        self.pairs = list(combinations(range(len(species)), 2))
        self.names = [f"{species[i]}-{species[j]}" for i, j in self.pairs]
        self.diff = np.zeros(len(self.pairs))
        self.aligned = np.zeros(len(self.pairs))
        self.indels = np.zeros(len(self.pairs), dtype=np.int64)
        self.insertions = np.zeros(len(species), dtype=np.int64)
        self.species = species
        self.by_carriers: dict[int, int] = {}  # carrier bit pattern -> transposon insertions
        self.signatures: dict[str, int] = {}  # species-tree branch -> signature substitutions

    def add(self, variants, keeps: list[np.ndarray]) -> None:
        pos, alleles = variants.sub_positions, variants.sub_alleles
        self.insertions += variants.indel_carriers[variants.indel_is_repeat].sum(axis=0)
        patterns = carrier_patterns(variants.indel_carriers[variants.indel_is_repeat])
        for pattern, n in zip(*np.unique(patterns, return_counts=True)):
            self.by_carriers[int(pattern)] = self.by_carriers.get(int(pattern), 0) + int(n)
        for branch, n in variants.signature_hits.items():
            self.signatures[branch] = self.signatures.get(branch, 0) + n
        for n, (i, j) in enumerate(self.pairs):
            both = keeps[i] & keeps[j]
            self.aligned[n] += both.sum()
            self.diff[n] += np.sum((alleles[:, i] != alleles[:, j]) & both[pos])
            carriers = variants.indel_carriers
            self.indels[n] += int(np.sum(carriers[:, i] != carriers[:, j]))

    def result(self) -> tuple[dict[str, float], dict[str, int]]:
        div = {name: round(float(d / a), 6) for name, d, a in
               zip(self.names, self.diff, self.aligned)}
        return div, {name: int(x) for name, x in zip(self.names, self.indels)}

    def lineage_insertions(self, species: list[str]) -> dict[str, int]:
        """Transposon copies each species carries that some other species lacks."""
        return {name: int(n) for name, n in zip(species, self.insertions)}

    def insertions_by_carriers(self) -> dict[str, int]:
        """Transposon insertions per carrier set ("chimpanzee+bonobo": the events on their
        common branch, or shared by incomplete lineage sorting), largest first."""
        named = {"+".join(s for j, s in enumerate(self.species) if pattern >> j & 1): n
                 for pattern, n in self.by_carriers.items()}
        return dict(sorted(named.items(), key=lambda item: -item[1]))


def _species_records(config: SimulationConfig, ancestral, layout: dict, all_variants: list,
                     index: int) -> tuple[list, dict[str, list], list[np.ndarray]]:
    """One species: whole-chromosome records, per-split records, and its keep masks."""
    whole, by_split, keeps = [], {split: [] for split in SPLITS}, []
    for c, (chrom, variants) in enumerate(zip(ancestral, all_variants)):
        regions = layout[c]
        cuts = np.array([start for _, start, _ in regions] + [len(chrom.bases)])
        sp = apply_variants(chrom.bases, chrom.repeat_mask, variants, index, cuts)
        letters = to_letters(sp.bases, sp.repeat_mask if config.softmask else None)
        name = f"chr{c + 1}"
        whole.append((name, letters))
        keeps.append(sp.keep)
        for (split, _, _), start, end in zip(regions, sp.cuts[:-1], sp.cuts[1:]):
            label = name if len(regions) == 1 else format_region(name, int(start), int(end))
            by_split[split].append((label, letters[start:end]))
    return whole, by_split, keeps


def _write_species(tmp: Path, name: str, whole: list, by_split: dict) -> list[tuple]:
    write_fasta(tmp / f"{name}.fa", whole)
    rows = []
    for split in SPLITS:
        write_fasta(tmp / f"{name}.{split}.fa", by_split[split])
        rows.append((f"{name}.{split}.fa", name, split))
    return rows


def _signature_record(spectra: LineageSpectra, counter: _DivergenceCounter,
                      leaves: list[str]) -> dict:
    """Per species-tree branch that received any: its signature and substitution count, named
    by the tree's species below it ("chimpanzee+bonobo")."""
    return {"+".join(name for name in leaves if name in branch.leaves): {
                "signature": spectra.signatures[branch.name],
                "substitutions": counter.signatures[branch.name]}
            for branch in spectra.branches if branch.name in counter.signatures}


def _record(config: SimulationConfig, species: list[str], lengths: list[int], layout: dict,
            ancestral: list, species_lengths: dict, counter: _DivergenceCounter,
            n_sites: int, n_indels: int, spectra: LineageSpectra, leaves: list[str]) -> dict:
    msprime = import_msprime()

    repeat_bases: dict[str, int] = {}
    for chrom in ancestral:
        for fam, n in chrom.repeat_bases.items():
            repeat_bases[fam] = repeat_bases.get(fam, 0) + n
    params = {k: v for k, v in asdict(config).items() if k != "genome"}
    params["species"] = species
    params["tree"] = config.evolution().tree
    divergence, indels = counter.result()
    return {
        "format": 1,
        "generator": {"mambadna": __version__, "msprime": msprime.__version__,
                      "numpy": np.__version__},
        "seed": config.seed,
        "params": params,
        "evolution": asdict(config.evolution()),
        "genome": asdict(config.genome),
        "ancestral": {
            "chromosomes": {f"chr{i + 1}": n for i, n in enumerate(lengths)},
            **_composition([c.bases for c in ancestral]),
            "repeat_fraction": round(sum(repeat_bases.values()) / sum(lengths), 4),
            "repeat_bases": repeat_bases,
        },
        "splits": {split: [f"chr{c + 1}" for c, regions in layout.items()
                           if any(r[0] == split for r in regions)] for split in SPLITS},
        "split_mode": "chromosomes" if len(lengths) >= 3 else "regions",
        "species_lengths": species_lengths,
        "substitution_sites": n_sites,
        "indel_events": n_indels,
        "divergence": divergence,
        "indel_differences": indels,
        "lineage_insertions": counter.lineage_insertions(species),
        "lineage_insertions_by_carriers": counter.insertions_by_carriers(),
        "lineage_signatures": _signature_record(spectra, counter, leaves),
    }


def seed_streams(seed: int, n_chromosomes: int) -> dict:
    """The independent random streams of a simulation (numpy SeedSequences), by part.

    "families": the repeat consensus sequences; "chromosomes": one per ancestral chromosome;
    "evolve": one per chromosome's evolution; "lineage": the lineage subfamilies; "spectrum":
    the branches' signatures. Children are spawned in a fixed order, and a stream added later
    goes last, so that adding one leaves every earlier output unchanged.
    """
    genome_seed, evolve_seed, lineage_seed, spectrum_seed = np.random.SeedSequence(seed).spawn(4)
    family_seed, *chrom_seeds = genome_seed.spawn(1 + n_chromosomes)
    return {"families": family_seed, "chromosomes": chrom_seeds,
            "evolve": evolve_seed.spawn(n_chromosomes), "lineage": lineage_seed,
            "spectrum": spectrum_seed}


def simulate_species(out_dir: str | Path, *, species: list[str] | tuple[str, ...] | None = None,
                     n_species: int | None = None, length: int = 1_000_000,
                     n_chromosomes: int = 4, tree: str | None = None,
                     divergence_scale: float = 1.0, insertion_rate: float = 0.45,
                     spectrum_bias: float = 0.0, seed: int = 0, force: bool = False,
                     softmask: bool = False, time_units: str = "myr",
                     progress: bool | None = None) -> SimulationResult:
    """Simulate one haploid genome per species along a species tree and write it to out_dir.

    Writes ``<species>.fa`` (records chr1..chrK), ``<species>.<split>.fa`` for train/val/test,
    ``manifest.tsv`` (``path label split``, paths relative to out_dir), ``simulation.json``
    (parameters, seed, versions, composition, measured divergence and what each lineage
    received) and ``SHA256SUMS``. insertion_rate and spectrum_bias set the lineage-specific
    signals (see lineage.py); divergence_scale multiplies every rate. Raises ConfigError for
    bad parameters and OutputExistsError if out_dir is not empty and force is False.
    progress: a bar of chromosomes simulated on stderr (None: when stderr is a terminal).
    """
    config = SimulationConfig(
        species=tuple(species) if species is not None else None, n_species=n_species,
        length=int(length), n_chromosomes=int(n_chromosomes), tree=tree, time_units=time_units,
        divergence_scale=float(divergence_scale), insertion_rate=float(insertion_rate),
        spectrum_bias=float(spectrum_bias), seed=int(seed), softmask=softmask)
    evolution = config.evolution()
    demography, leaves = species_demography(evolution)
    chosen = _select_species(config, leaves)
    lengths = config.chromosome_lengths()
    layout = _split_layout(config, lengths)

    seeds = seed_streams(config.seed, len(lengths))
    families = repeat_families(np.random.default_rng(seeds["families"]), config.genome)
    lineage = LineageRepeats(families, seeds["lineage"])
    spectra = LineageSpectra(demography, seeds["spectrum"])
    chains = background_chains(config.genome)
    ancestral, variants = [], []
    with bar("simulate", len(lengths), unit="chr", enabled=progress, unit_scale=False) as shown:
        for n, chrom_seed, evolve_seed in zip(lengths, seeds["chromosomes"], seeds["evolve"]):
            chrom = ancestral_chromosome(np.random.default_rng(chrom_seed), n, config.genome,
                                         families, chains)
            ancestral.append(chrom)
            variants.append(evolve_chromosome(chrom.bases, chosen, demography, evolution,
                                              evolve_seed, lineage, spectra))
            shown.update()

    out_dir = Path(out_dir)
    counter = _DivergenceCounter(chosen)
    rows, species_lengths, keeps = [], {}, []
    with atomic_directory(out_dir, check=lambda target: check_replaceable(target, force)) as tmp:
        for i, name in enumerate(chosen):
            whole, by_split, species_keeps = _species_records(config, ancestral, layout,
                                                              variants, i)
            rows += _write_species(tmp, name, whole, by_split)
            species_lengths[name] = {rec: len(letters) for rec, letters in whole}
            keeps.append(species_keeps)
        for c, chrom_variants in enumerate(variants):
            counter.add(chrom_variants, [species_keeps[c] for species_keeps in keeps])
        write_manifest(tmp / "manifest.tsv", rows)
        record = _record(config, chosen, lengths, layout, ancestral, species_lengths, counter,
                         sum(len(v.sub_positions) for v in variants),
                         sum(len(v.indel_positions) for v in variants), spectra, leaves)
        write_json(tmp / "simulation.json", record)
        write_checksums(tmp)
    return SimulationResult(
        out_dir=out_dir,
        fasta={name: out_dir / f"{name}.fa" for name in chosen},
        split_fasta={name: {s: out_dir / f"{name}.{s}.fa" for s in SPLITS} for name in chosen},
        manifest=out_dir / "manifest.tsv", params=record, divergence=record["divergence"])


def parse_species(text: str | None) -> tuple[tuple[str, ...] | None, int | None]:
    """The CLI's ``--species``: a count ("5") or comma-separated leaf names -> (names, count)."""
    if text is None:
        return None, None
    text = text.strip()
    if text.isdigit():
        return None, int(text)
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ConfigError(f"--species {text!r} names no species",
                          fix="give a number (e.g. 5) or names (e.g. human,chimpanzee)")
    return names, None


def summary(result: SimulationResult) -> str:
    """A few lines for the terminal: what was written and the divergence it produced."""
    params = result.params["params"]
    lengths = result.params["ancestral"]["chromosomes"]
    lines = [
        f"simulated {len(result.fasta)} species x {params['length']:,} bases "
        f"({len(lengths)} chromosomes, seed {params['seed']}) in {result.out_dir}",
        "splits: " + "; ".join(f"{split}: {', '.join(chroms)}"
                               for split, chroms in result.params["splits"].items())
        + f" ({result.params['split_mode']})",
        "divergence (substitutions per aligned base):",
    ]
    lines += [f"  {pair:<28} {value:.4%}" for pair, value in result.divergence.items()]
    lines.append("lineage-specific transposon insertions: " + ", ".join(
        f"{name} {n}" for name, n in result.params["lineage_insertions"].items()))
    if result.params["lineage_signatures"]:
        lines.append("lineage substitution signatures: " + ", ".join(
            f"{branch} {info['signature']} x{info['substitutions']}"
            for branch, info in result.params["lineage_signatures"].items()))
    lines.append(f"manifest: {result.manifest}")
    return "\n".join(lines)
