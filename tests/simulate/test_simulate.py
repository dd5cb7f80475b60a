"""mambadna.simulate: realistic composition, divergence along the tree, splits, determinism, and
the lineage-specific signals (transposon insertions, substitution signatures) that let a model
tell species apart on a held-out chromosome."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ConfigError, OutputExistsError
from mambadna.regions import Region
from mambadna.simulate import GREAT_APES, core, evolve, genome, lineage, simulate_species


def read_fasta(path: Path) -> dict[str, str]:
    records: dict[str, list[str]] = {}
    name = None
    for line in Path(path).read_text().splitlines():
        if line.startswith(">"):
            name = line[1:]
            records[name] = []
        else:
            records[name].append(line)
    return {k: "".join(v) for k, v in records.items()}


def composition(seq: str) -> tuple[float, float]:
    arr = np.frombuffer(seq.upper().encode(), dtype=np.uint8)
    freq = {b: float(np.mean(arr == ord(b))) for b in "ACGT"}
    cpg = float(np.mean((arr[:-1] == ord("C")) & (arr[1:] == ord("G"))))
    return freq["C"] + freq["G"], cpg / (freq["C"] * freq["G"])


@pytest.fixture(scope="module")
def apes(tmp_path_factory) -> object:
    """Great apes at realistic parameters, 200 kb per genome: the one 'science' simulation."""
    return simulate_species(tmp_path_factory.mktemp("apes") / "sim", length=200_000, seed=3)


def test_great_apes_divergence_follows_the_tree(apes):
    div = apes.divergence
    assert set(apes.fasta) == set(GREAT_APES)
    assert div["chimpanzee-bonobo"] < div["human-chimpanzee"] < div["human-gorilla"] \
        < div["human-orangutan"]
    # Science notes: ~0.6 % human-chimp and ~1.6 % human-orangutan at scale 1.
    assert 0.0045 < div["human-chimpanzee"] < 0.0085
    assert 0.0125 < div["human-orangutan"] < 0.020
    assert abs(div["human-chimpanzee"] - div["human-bonobo"]) < 0.002


def test_composition_is_genome_like(apes):
    seq = "".join(read_fasta(apes.fasta["human"]).values())
    gc, cpg_oe = composition(seq)
    assert 0.38 < gc < 0.45
    assert 0.15 < cpg_oe < 0.30  # CpG depletion, unlike i.i.d. bases (1.0)
    anc = apes.params["ancestral"]
    assert 0.3 < anc["repeat_fraction"] < 0.5
    assert set(anc["repeat_bases"]) == {"Alu", "L1", "LTR", "DNA", "microsatellite"}


def test_files_manifest_and_chromosome_splits(apes):
    out = apes.out_dir
    rows = (out / "manifest.tsv").read_text().splitlines()
    assert rows[0] == "path\tlabel\tsplit"
    table = [r.split("\t") for r in rows[1:]]
    assert len(table) == 5 * 3
    expected = {"train": ["chr1", "chr2"], "val": ["chr3"], "test": ["chr4"]}
    for path, label, split in table:
        assert path == f"{label}.{split}.fa"
        assert list(read_fasta(out / path)) == expected[split]
    whole = read_fasta(apes.fasta["gorilla"])
    assert list(whole) == ["chr1", "chr2", "chr3", "chr4"]
    assert read_fasta(out / "gorilla.test.fa")["chr4"] == whole["chr4"]
    lengths = [len(s) for s in whole.values()]
    assert lengths == sorted(lengths, reverse=True)  # chr1 is the longest
    record = json.loads((out / "simulation.json").read_text())
    assert record["seed"] == 3 and record["divergence"] == apes.divergence
    assert record["splits"] == expected and record["split_mode"] == "chromosomes"
    assert record["species_lengths"]["gorilla"] == dict(zip(whole, lengths))


def test_fai_index_is_samtools_compatible(apes):
    pysam = pytest.importorskip("pysam")
    whole = read_fasta(apes.fasta["orangutan"])
    with pysam.FastaFile(str(apes.fasta["orangutan"])) as fasta:
        assert list(fasta.references) == ["chr1", "chr2", "chr3", "chr4"]
        assert fasta.fetch("chr3", 1234, 1300) == whole["chr3"][1234:1300]


def test_ancestral_alleles_are_the_ancestral_genome():
    # Almost every site carries one mutation on one branch of the rooted tree, so some species
    # keeps the ancestral base; msprime's own random ancestral alleles would often match none.
    rng = np.random.default_rng(0)
    bases = rng.integers(0, 4, 100_000).astype(np.uint8)
    config = evolve.EvolutionConfig()
    demography, leaves = evolve.species_demography(config)
    variants = evolve.evolve_chromosome(bases, leaves, demography, config,
                                        np.random.SeedSequence(1))
    same = variants.sub_alleles == bases[variants.sub_positions][:, None]
    assert len(variants.sub_positions) > 500
    assert np.mean(same.any(axis=1)) > 0.98


def test_apply_variants_indels_and_coordinates():
    bases = np.arange(20, dtype=np.uint8) % 4
    variants = evolve.ChromosomeVariants(
        sub_positions=np.array([0]), sub_alleles=np.array([[3, 0]], dtype=np.uint8),
        indel_positions=np.array([4, 9, 15]),
        indel_is_insertion=np.array([False, True, False]),
        indel_lengths=np.array([3, 2, 1]),
        inserted=np.array([2, 2], dtype=np.uint8),
        indel_carriers=np.array([[True, False], [True, True], [False, True]]))
    mask = np.zeros(20, dtype=bool)
    first = evolve.apply_variants(bases, mask, variants, 0, cuts=np.array([0, 10, 20]))
    # species 0: base 0 -> T(3); delete ancestral 4..6; insert GG after ancestral 9.
    expected = [3, 1, 2, 3, 3, 0, 1, 2, 2, *bases[10:]]
    assert first.bases.tolist() == expected
    assert first.cuts.tolist() == [0, 9, 19]  # ancestral 10 lands after the 2 inserted bases
    second = evolve.apply_variants(bases, mask, variants, 1, cuts=np.array([10]))
    assert second.bases.tolist() == [*bases[:10], 2, 2, *bases[10:15], *bases[16:]]
    assert second.cuts.tolist() == [12]
    assert second.keep.sum() == 19


def test_markov_chain_fit_hits_targets():
    cond = genome.fit_chain(0.41, 0.2)
    gc, oe = genome.composition(genome._stationary_pairs(cond))
    assert abs(gc - 0.41) < 1e-4 and abs(oe - 0.2) < 1e-4
    seq = genome.markov_sequence(np.random.default_rng(0), 300_000, cond[None])
    gc_seq, oe_seq = composition(np.array(list(b"ACGT"), dtype=np.uint8)[seq].tobytes().decode())
    assert abs(gc_seq - 0.41) < 0.01 and abs(oe_seq - 0.2) < 0.03


def test_deterministic_by_seed(tmp_path):
    kwargs = dict(n_species=2, length=30_000, n_chromosomes=3)
    a = simulate_species(tmp_path / "a", seed=7, **kwargs)
    b = simulate_species(tmp_path / "b", seed=7, **kwargs)
    c = simulate_species(tmp_path / "c", seed=8, **kwargs)
    for name in ("human", "chimpanzee"):
        assert a.fasta[name].read_bytes() == b.fasta[name].read_bytes()
        assert a.fasta[name].read_bytes() != c.fasta[name].read_bytes()
    assert (tmp_path / "a/simulation.json").read_text() == \
        (tmp_path / "b/simulation.json").read_text()


def test_divergence_scale(tmp_path):
    kwargs = dict(species=["human", "orangutan"], length=100_000, n_chromosomes=1, seed=2)
    base = simulate_species(tmp_path / "x1", **kwargs).divergence["human-orangutan"]
    scaled = simulate_species(tmp_path / "x3", divergence_scale=3.0, **kwargs)
    ratio = scaled.divergence["human-orangutan"] / base
    assert 2.3 < ratio < 3.5  # finite sites: a little below 3 from multiple hits


def test_region_splits_are_disjoint_and_homologous(tmp_path):
    result = simulate_species(tmp_path / "r", species=["human", "chimpanzee"], length=40_000,
                              n_chromosomes=1, seed=5)
    starts = {}
    for name in ("human", "chimpanzee"):
        whole = read_fasta(result.fasta[name])["chr1"]
        pieces = []
        for split in ("train", "val", "test"):
            ((record, seq),) = read_fasta(result.split_fasta[name][split]).items()
            region = Region.parse(record)  # samtools' notation: 1-based, inclusive
            chrom, start, end = region.name, region.start, region.end
            assert chrom == "chr1" and seq == whole[start:end]
            pieces.append((start, end))
        assert pieces[0][0] == 0 and pieces[-1][1] == len(whole)
        assert all(a[1] == b[0] for a, b in pairwise(pieces))
        assert 0.07 < (pieces[2][1] - pieces[2][0]) / len(whole) < 0.13
        starts[name] = whole[pieces[2][0]: pieces[2][0] + 200]
    # The held-out region begins at the same homologous base in both species.
    mismatches = sum(x != y for x, y in zip(starts["human"], starts["chimpanzee"]))
    assert mismatches < 10
    assert result.params["split_mode"] == "regions"


def test_softmask_marks_repeats(tmp_path):
    result = simulate_species(tmp_path / "m", n_species=1, length=60_000, n_chromosomes=1,
                              softmask=True)
    seq = read_fasta(result.fasta["human"])["chr1"]
    lower = sum(ch.islower() for ch in seq) / len(seq)
    assert abs(lower - result.params["ancestral"]["repeat_fraction"]) < 0.05


def test_custom_tree_and_species_selection(tmp_path):
    result = simulate_species(tmp_path / "t", tree="((a:1,b:1):2,c:3);", length=30_000,
                              n_chromosomes=1)
    assert list(result.fasta) == ["a", "b", "c"]
    assert result.divergence["a-b"] < result.divergence["a-c"]
    with pytest.raises(ConfigError, match="unknown species"):
        simulate_species(tmp_path / "u", species=["human", "yeti"], length=30_000)
    with pytest.raises(ConfigError, match="not both"):
        simulate_species(tmp_path / "u", species=["human"], n_species=2, length=30_000)
    with pytest.raises(ConfigError, match="species tree"):
        simulate_species(tmp_path / "u", tree="((a:1,b:1);", length=30_000)
    with pytest.raises(ConfigError, match="too short"):
        simulate_species(tmp_path / "u", length=5_000, n_chromosomes=4)
    assert not (tmp_path / "u").exists()


def test_existing_output_is_protected(tmp_path, monkeypatch):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    small = dict(n_species=2, length=20_000, n_chromosomes=1)
    with pytest.raises(OutputExistsError):
        simulate_species(out, **small)
    with pytest.raises(OutputExistsError, match="not a previous simulation"):
        simulate_species(out, force=True, **small)
    assert (out / "notes.txt").read_text() == "keep me"
    other = tmp_path / "sim2"
    simulate_species(other, seed=1, **small)
    first = (other / "human.fa").read_bytes()
    simulate_species(other, seed=2, force=True, **small)
    assert (other / "human.fa").read_bytes() != first

    # A failure while writing leaves neither a half-written output nor temporary folders.
    from mambadna.simulate import core

    def broken(path, payload):
        raise RuntimeError("disk full")

    monkeypatch.setattr(core, "write_json", broken)
    with pytest.raises(RuntimeError):
        simulate_species(tmp_path / "never", **small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim", "sim2"]


def test_cli_simulate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["simulate", "-o", str(out), "--species", "2", "--length",
                                 "30000", "--n-chromosomes", "3", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "human-chimpanzee" in result.output and "manifest:" in result.output
    assert sorted(p.name for p in out.glob("*.fa")) == [
        "chimpanzee.fa", "chimpanzee.test.fa", "chimpanzee.train.fa", "chimpanzee.val.fa",
        "human.fa", "human.test.fa", "human.train.fa", "human.val.fa"]
    again = runner.invoke(cli, ["simulate", "-o", str(out), "--species", "human,gorilla",
                                "--length", "30000"])
    assert again.exit_code == 1 and "--force" in again.output
    bad = runner.invoke(cli, ["simulate", "-o", str(tmp_path / "b"), "--species", "yeti"])
    assert bad.exit_code == 1 and "unknown species" in bad.output


def _kmer_codes(seq: str, k: int = 16) -> np.ndarray:
    table = np.zeros(256, dtype=np.int64)
    table[np.frombuffer(b"ACGTacgt", np.uint8)] = [0, 1, 2, 3, 0, 1, 2, 3]
    a = table[np.frombuffer(seq.encode(), np.uint8)]
    code = np.zeros(len(a) - k + 1, dtype=np.int64)
    for i in range(k):
        code = code * 4 + a[i: len(a) - k + 1 + i]
    return code


def _kmer_oracle_accuracy(result, species: list[str], window: int = 2000) -> float:
    """Classify test-chromosome windows by the 16-mers only one species has on its training
    chromosomes: what any model can learn across chromosomes, at most."""
    train = {s: np.unique(np.concatenate([_kmer_codes(x) for x in
                                          read_fasta(result.split_fasta[s]["train"]).values()]))
             for s in species}
    own = {s: np.setdiff1d(train[s], np.concatenate([train[t] for t in species if t != s]))
           for s in species}
    correct = total = 0
    for i, s in enumerate(species):
        (seq,) = read_fasta(result.split_fasta[s]["test"]).values()
        for start in range(0, len(seq) - window + 1, window):
            codes = _kmer_codes(seq[start: start + window])
            score = [int(np.isin(codes, own[t]).sum()) for t in species]
            correct += score[i] > max(score[:i] + score[i + 1:])
            total += 1
    return correct / total


def test_lineage_insertions_make_species_learnable_across_chromosomes(tmp_path):
    # Substitutions alone leave no species signal on a held-out chromosome; lineage-specific
    # transposon subfamilies do, because their copies land on every chromosome.
    species = ["human", "chimpanzee"]
    kwargs = dict(species=species, length=120_000, n_chromosomes=3, seed=2)
    none = simulate_species(tmp_path / "none", insertion_rate=0.0, **kwargs)
    some = simulate_species(tmp_path / "some", insertion_rate=100.0, **kwargs)
    assert sum(none.params["lineage_insertions"].values()) == 0
    assert min(some.params["lineage_insertions"].values()) > 50
    assert _kmer_oracle_accuracy(none, species) < 0.5
    assert _kmer_oracle_accuracy(some, species) > 0.8


# ------------------------------------------------------------------ lineage-specific signals


def _branch_pattern(branch, leaves: list[str]) -> int:
    return sum(1 << leaves.index(name) for name in branch.leaves)


def test_lineage_insertions_per_branch_follow_rate_times_branch_times_length():
    # Every branch of the species tree, leaves and internal ones, receives rate x branch length x
    # genome length insertions (Poisson): a dropped, misplaced or mis-scaled event shows here.
    config = evolve.EvolutionConfig(insertion_rate=100.0)
    demography, leaves = evolve.species_demography(config)
    length = 400_000
    bases = np.random.default_rng(0).integers(0, 4, length).astype(np.uint8)
    families = genome.repeat_families(np.random.default_rng(1), genome.GenomeConfig())
    repeats = lineage.LineageRepeats(families, np.random.SeedSequence(2))
    variants = evolve.evolve_chromosome(bases, leaves, demography, config,
                                        np.random.SeedSequence(3), repeats)
    te = variants.indel_is_repeat
    patterns = lineage.carrier_patterns(variants.indel_carriers[te])
    rate = config.insertion_rate_per_generation()
    assert rate == pytest.approx(100 * 1e-12 * 25)  # per Mb per Myr -> per base per generation
    branches = lineage.species_branches(demography)
    assert len(branches) == 2 * len(leaves) - 2
    for branch in branches:
        # A leaf's edge in the genealogy also spans the wait for its sister lineage in the
        # ancestral population (2 Ne generations on average for two haploid genomes); an
        # internal edge gains that wait at its top and loses it at its bottom.
        extra = 2 * config.population_size if len(branch.leaves) == 1 else 0.0
        expected = rate * length * (branch.length + extra)
        observed = int(np.sum(patterns == _branch_pattern(branch, leaves)))
        assert abs(observed - expected) < 4 * np.sqrt(expected) + 0.1 * expected, \
            (sorted(branch.leaves), observed, expected)
    # Each event is one copy of its lineage's subfamily in the inserted sequence.
    lengths = variants.indel_lengths[te]
    assert lengths.min() >= 50 and 250 < lengths.mean() < 1500


def test_insertions_reach_the_genomes_at_the_requested_rate(tmp_path):
    species = ["human", "orangutan"]
    result = simulate_species(tmp_path / "r", species=species, length=200_000, n_chromosomes=3,
                              insertion_rate=50.0, seed=6)
    # Each lineage: its 16 Myr branch plus ~0.5 Myr (2 Ne generations) before the two coalesce.
    expected = 50.0 * 0.2 * 16.5
    by_carriers = result.params["lineage_insertions_by_carriers"]
    for name in species:
        n = by_carriers[name]
        assert abs(n - expected) < 4 * np.sqrt(expected), (name, n, expected)
        assert result.params["lineage_insertions"][name] >= n
        # The copies are in the sequence: the genome grew by them (Alu 300 bp, L1 longer).
        grown = sum(result.params["species_lengths"][name].values()) - 200_000
        assert grown > 300 * n
    # At the real rate a genome this size holds a handful: the task stays hard by default.
    real = simulate_species(tmp_path / "real", species=species, length=200_000,
                            n_chromosomes=3, seed=6)
    assert max(real.params["lineage_insertions"].values()) < 12


def _kmer_set(seq: np.ndarray, k: int = 16) -> set[int]:
    letters = np.array(list("ACGT"))
    return set(_kmer_codes("".join(letters[seq]), k).tolist()) | set(
        _kmer_codes("".join(letters[3 - seq[::-1]]), k).tolist())


def test_each_test_chromosome_carries_its_lineage_subfamily(tmp_path):
    species = ["human", "orangutan"]
    seed, n_chrom = 4, 3
    result = simulate_species(tmp_path / "s", species=species, length=150_000,
                              n_chromosomes=n_chrom, insertion_rate=100.0, seed=seed)
    # The simulation's own lineage subfamilies, rebuilt from its seed streams.
    seeds = core.seed_streams(seed, n_chrom)
    families = genome.repeat_families(np.random.default_rng(seeds["families"]),
                                      genome.GenomeConfig())
    repeats = lineage.LineageRepeats(families, seeds["lineage"])
    alu = {name: _kmer_set(repeats.consensus(1 << i, 0)) for i, name in enumerate(species)}
    master = _kmer_set(families[0].consensus.ravel())
    own = {name: alu[name] - alu[other] - master
           for name, other in zip(species, species[::-1])}
    for name, other in zip(species, species[::-1]):
        (seq,) = read_fasta(result.split_fasta[name]["test"]).values()
        codes = _kmer_codes(seq)
        mine = int(np.isin(codes, list(own[name])).sum())
        theirs = int(np.isin(codes, list(own[other])).sum())
        assert mine > 200 and mine > 20 * max(theirs, 1), (name, mine, theirs)


def test_signatures_follow_the_rate_on_each_branch():
    config = evolve.EvolutionConfig(spectrum_bias=50.0)
    demography, leaves = evolve.species_demography(config)
    spectra = lineage.LineageSpectra(demography, np.random.SeedSequence(5))
    signatures = spectra.signatures
    assert signatures["human"] == "TCC>TTC"  # the human pulse (Harris 2015)
    assert len(set(signatures.values())) == len(signatures) == 2 * len(leaves) - 2
    assert not any(sig[1] == "C" and sig[2] == "G" for sig in signatures.values())  # no CpG
    bases = np.random.default_rng(6).integers(0, 4, 300_000).astype(np.uint8)
    rate = config.signature_rate_per_generation()
    positions, alleles, branch_of = spectra.substitutions(np.random.default_rng(7), bases,
                                                          leaves, rate)
    assert np.all(np.diff(positions) > 0)  # one change per site
    letters = "".join(np.array(list("ACGT"))[bases])
    for index, branch in enumerate(spectra.branches):
        sig = signatures[branch.name]
        before, after = sig.split(">")
        rc = before[::-1].translate(str.maketrans("ACGT", "TGCA"))
        sites = sum(1 for i in range(len(letters) - 2) if letters[i:i + 3] in (before, rc))
        expected = sites * -np.expm1(-rate * branch.length)
        mine = branch_of == index
        assert abs(mine.sum() - expected) < 4 * np.sqrt(expected) + 0.05 * expected, sig
        carriers = np.array([name in branch.leaves for name in leaves])
        new, old = alleles[mine][:, carriers], alleles[mine][:, ~carriers]
        assert np.all(old == bases[positions[mine]][:, None])  # the others keep the base
        forward = bases[positions[mine]] == "ACGT".index(before[1])
        want = np.where(forward, "ACGT".index(after[1]), 3 - "ACGT".index(after[1]))
        assert np.all(new == want[:, None])  # the carriers take the signature's base


def _trinucleotide_accuracy(result, species: list[str], window: int = 1000) -> float:
    """Multinomial naive Bayes on 3-mer counts: trained on the training chromosomes, balanced
    accuracy on windows of the test chromosome."""
    def counts(seq: str) -> np.ndarray:
        return np.bincount(_kmer_codes(seq, 3), minlength=64) + 0.0

    logp = []
    for name in species:
        c = sum(counts(x) for x in read_fasta(result.split_fasta[name]["train"]).values()) + 1
        logp.append(np.log(c / c.sum()))
    recalls = []
    for i, name in enumerate(species):
        (seq,) = read_fasta(result.split_fasta[name]["test"]).values()
        calls = [int(np.argmax([counts(seq[a:a + window]) @ lp for lp in logp]))
                 for a in range(0, len(seq) - window + 1, window)]
        recalls.append(np.mean(np.array(calls) == i))
    return float(np.mean(recalls))


def test_signatures_make_species_learnable_across_chromosomes(tmp_path):
    # A lineage's signature acts on every chromosome: the test chromosome's composition tells
    # the species apart, which neutral substitutions alone never do.
    species = ["human", "orangutan"]
    kwargs = dict(species=species, length=150_000, n_chromosomes=3, insertion_rate=0.0, seed=2)
    off = simulate_species(tmp_path / "off", **kwargs)
    on = simulate_species(tmp_path / "on", spectrum_bias=100.0, **kwargs)
    assert off.params["lineage_signatures"] == {}
    signatures = on.params["lineage_signatures"]
    assert signatures["human"]["signature"] == "TCC>TTC"
    assert set(signatures) >= {"human", "orangutan"}
    assert all(v["substitutions"] > 300 for v in signatures.values())
    # The human test chromosome has lost TCC (GGA on the other strand) to TTC (GAA).
    def share(result, name, kmers):
        (seq,) = read_fasta(result.split_fasta[name]["test"]).values()
        return sum(seq.count(k) for k in kmers) / len(seq)
    assert share(on, "human", ["TCC", "GGA"]) < 0.85 * share(on, "orangutan", ["TCC", "GGA"])
    assert _trinucleotide_accuracy(off, species) < 0.65
    assert _trinucleotide_accuracy(on, species) > 0.85
    # Off by default, and then the output is exactly what it was without the mechanism.
    again = simulate_species(tmp_path / "again", spectrum_bias=0.0, **kwargs)
    assert again.fasta["human"].read_bytes() == off.fasta["human"].read_bytes()
