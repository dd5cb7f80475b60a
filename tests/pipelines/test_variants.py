"""score-variants: windows, the shared-prefix path against whole windows, both strands, the
REF/ALT swap, statuses of real-world VCF records, outputs (table and indexed VCF), the CLI.

The reference and VCFs are written by the tests (random DNA, hand-written VCF text in the
format bcftools writes); the models are tiny random MambaDNA networks, except the motif test,
which trains one.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pysam
import pytest
import torch
from click.testing import CliRunner

from mambadna.alphabet import N, encode, reverse_complement
from mambadna.cli import cli
from mambadna.errors import ConfigError, FormatError, InputError
from mambadna.model import MambaDNA, ModelConfig
from mambadna.pipelines.likelihood import LikelihoodRunner, Site
from mambadna.pipelines.variants import ScoreOptions, place, score_variants

pytestmark = pytest.mark.usefixtures("one_torch_thread")

W = 64
HEADER = """##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the variant">
##INFO=<ID=SVTYPE,Number=1,Type=String,Description="Type of structural variant">
##ALT=<ID=DEL,Description="Deletion">
##contig=<ID=chr1,length=600>
##contig=<ID=chr2,length=300>
##contig=<ID=chrM,length=1000>
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
"""


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MambaDNA(ModelConfig(d_model=16, n_layer=2, d_state=4)).eval()


@pytest.fixture
def genome(tmp_path, write_fasta, random_dna):
    """An indexed reference: chr1 (600 bases) and chr2 (300)."""
    seqs = {"chr1": random_dna(600, seed=1), "chr2": random_dna(300, seed=2)}
    path = write_fasta(tmp_path / "ref.fa", seqs)
    pysam.faidx(str(path))
    return path, seqs


def write_vcf(path, rows: list[str], header: str = HEADER):
    path.write_text(header + "".join(row.replace(" ", "\t") + "\n" for row in rows))
    return path


def other(base: str) -> str:
    return "A" if base != "A" else "C"


def window_ll(model, letters: str) -> float:
    """Log-likelihood of one whole window from one plain forward pass (the ground truth)."""
    tokens = torch.from_numpy(encode(letters).astype(np.int64))[None]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(tokens)[0, :-1].double(), -1)
    targets = tokens[0, 1:]
    return float((log_probs.gather(-1, targets[:, None])[:, 0] * (targets != N)).sum())


def rc(letters: str) -> str:
    from mambadna.alphabet import reverse_complement_str

    return reverse_complement_str(letters)


# ---------------------------------------------------------------------- windows


def test_place_centres_the_variant_and_refuses_the_edges():
    assert place(100, 1, [1, 1], 1000, 64, "skip") == 32
    assert place(31, 1, [1, 1], 1000, 64, "skip") == "contig_end"  # 31 bases before it
    assert place(968, 1, [1, 1], 1000, 64, "skip") == 32  # ends at the contig end
    assert place(969, 1, [1, 1], 1000, 64, "skip") == "contig_end"  # one base past it
    assert place(100, 40, [40, 1], 1000, 64, "skip") == "too_long"  # REF beyond W - W//2
    assert place(5, 1, [1, 1], 1000, 64, "shift") == 5  # moved: the variant off-centre
    assert place(990, 1, [1, 1], 1000, 64, "shift") == 990 + 1 + 64 - 1 - 1000
    assert place(0, 1, [1, 1], 1000, 64, "shift") == "contig_end"  # no base before it
    assert place(10, 1, [1, 1], 50, 64, "shift") == "contig_end"  # contig shorter than W


def test_the_default_window_is_the_training_length_up_to_4096(tmp_path, genome):
    path, seqs = genome
    vcf = write_vcf(tmp_path / "v.vcf", [f"chr1 301 . {seqs['chr1'][300]} A,C,G,T . . ."])
    torch.manual_seed(0)
    small = MambaDNA(ModelConfig(d_model=8, n_layer=1, d_state=4))
    small.training_info = {"seq_len": 100}
    assert score_variants(small, path, vcf).metadata["window"] == 100
    small.training_info = {"seq_len": 1 << 20}
    result = score_variants(small, path, vcf)
    assert result.metadata["window"] == 4096 and set(result.frame["status"]) == {"contig_end"}


def test_runner_shared_prefix_equals_whole_windows(model):
    rng = np.random.default_rng(0)
    sites = [Site(rng.integers(5, 9, 20).astype(np.uint8),
                  [rng.integers(5, 10, 13).astype(np.uint8) for _ in range(k)])
             for k in (1, 3, 2)]
    for shared in (True, False):
        result = LikelihoodRunner(model, shared_prefix=shared)(sites)
        for i, site in enumerate(sites):
            for k, suffix in enumerate(site.suffixes):
                letters = "".join("ACGTN"[t - 5] for t in np.concatenate([site.prefix, suffix]))
                got = result.prefix[i] + result.suffixes[i][k]
                assert got == pytest.approx(window_ll(model, letters), abs=1e-4)


def expected_forward(seq: str, p: int, ref: str, alt: str) -> tuple[str, str]:
    """The module docstring's forward windows, built by hand."""
    f, r, a = W // 2, len(ref), len(alt)
    ref_window = seq[p - f:p - f + W]
    alt_window = seq[p - f:p] + alt + seq[p + r:p + r + W - f - a]
    assert len(ref_window) == len(alt_window) == W
    return ref_window, alt_window


def expected_reverse(seq: str, p: int, ref: str, alt: str) -> tuple[str, str]:
    """The same rule on the reverse strand: f bases 3' of the variant, then the allele."""
    f, r = W // 2, len(ref)
    windows = []
    for allele in (ref, alt):
        left = W - f - len(allele)
        windows.append(rc(seq[p - left:p] + allele + seq[p + r:p + r + f]))
    assert len(windows[0]) == len(windows[1]) == W
    return windows[0], windows[1]


@pytest.mark.parametrize("kind", ["snv", "mnv", "deletion", "insertion"])
@pytest.mark.parametrize("rc_average", [False, True])
def test_scores_equal_whole_windows_built_by_hand(tmp_path, genome, model, kind, rc_average):
    path, seqs = genome
    seq, p = seqs["chr1"], 300
    ref, alt = {"snv": (seq[p], other(seq[p])),
                "mnv": (seq[p:p + 3], "".join(other(b) for b in seq[p:p + 3])),
                "deletion": (seq[p:p + 6], seq[p]),
                "insertion": (seq[p], seq[p] + "GATTACA")}[kind]
    vcf = write_vcf(tmp_path / "v.vcf", [f"chr1 {p + 1} . {ref} {alt} . PASS ."])
    strands = [expected_forward(seq, p, ref, alt)]
    if rc_average:
        strands.append(expected_reverse(seq, p, ref, alt))
    ref_ll = np.mean([window_ll(model, r) for r, _ in strands])
    alt_ll = np.mean([window_ll(model, a) for _, a in strands])
    for method in ("shared-prefix", "naive"):
        row = score_variants(model, path, vcf, window=W, rc_average=rc_average,
                             method=method).frame.iloc[0]
        assert row["status"] == "ok"
        assert row["ref_ll"] == pytest.approx(ref_ll, abs=1e-4)
        assert row["alt_ll"] == pytest.approx(alt_ll, abs=1e-4)
        assert row["score"] == pytest.approx(alt_ll - ref_ll, abs=1e-4)
        f, r, shortest = W // 2, len(ref), min(len(ref), len(alt))
        starts, ends = [p - f], [p + r + W - f - shortest]  # what the windows read
        if rc_average:
            starts.append(p - (W - f - shortest))
            ends.append(p + r + f)
        assert (row["window_start"], row["window_end"]) == (min(starts), max(ends))


def test_swapping_ref_and_alt_on_the_swapped_reference_negates_snv_scores(
        tmp_path, genome, model, write_fasta):
    path, seqs = genome
    seq = seqs["chr1"]
    positions = [100, 250, 251, 400]
    alts = {p: other(seq[p]) for p in positions}
    vcf = write_vcf(tmp_path / "a.vcf", [f"chr1 {p + 1} . {seq[p]} {alts[p]} . . ."
                                         for p in positions])
    swapped_seq = list(seq)
    for p in positions:
        swapped_seq[p] = alts[p]
    swapped_seq = "".join(swapped_seq)
    swapped = write_fasta(tmp_path / "swapped.fa", {"chr1": swapped_seq, "chr2": seqs["chr2"]})
    pysam.faidx(str(swapped))
    # each variant's window holds only its own change: score them one at a time
    for p in positions:
        one = write_vcf(tmp_path / f"a{p}.vcf", [f"chr1 {p + 1} . {seq[p]} {alts[p]} . . ."])
        back = write_vcf(tmp_path / f"b{p}.vcf", [f"chr1 {p + 1} . {alts[p]} {seq[p]} . . ."])
        ref_swap = list(seq)
        ref_swap[p] = alts[p]
        single = write_fasta(tmp_path / f"s{p}.fa", {"chr1": "".join(ref_swap)})
        pysam.faidx(str(single))
        for rc_average in (True, False):
            forward = score_variants(model, path, one, window=W, rc_average=rc_average).frame
            reverse = score_variants(model, single, back, window=W,
                                     rc_average=rc_average).frame
            assert reverse["score"].iloc[0] == pytest.approx(-forward["score"].iloc[0],
                                                             abs=1e-5)
            assert reverse["ref_ll"].iloc[0] == pytest.approx(forward["alt_ll"].iloc[0],
                                                              abs=1e-4)
    assert score_variants(model, swapped, vcf, window=W, on_ref_mismatch="skip").counts == {
        "ref_mismatch": len(positions)}


def test_records_at_one_position_share_their_prefix_and_ref_window(tmp_path, genome, model):
    path, seqs = genome
    b = seqs["chr1"][150]
    alts = [x for x in "ACGT" if x != b]
    joined = write_vcf(tmp_path / "joined.vcf", [f"chr1 151 . {b} {','.join(alts)} . . ."])
    split = write_vcf(tmp_path / "split.vcf", [f"chr1 151 . {b} {x} . . ." for x in alts])
    one = score_variants(model, path, joined, window=W)
    three = score_variants(model, path, split, window=W)
    np.testing.assert_allclose(one.frame["score"], three.frame["score"], rtol=0, atol=1e-6)
    assert one.windows_run == three.windows_run == 2 * (1 + len(alts))  # REF once per strand


# ---------------------------------------------------------------------- real-world records


def real_world_vcf(tmp_path, seq1: str) -> tuple:
    """Multi-allelic SNV, MNV, deletion, insertion, symbolic <DEL> and '*', a contig the
    reference lacks, a record without ALT, one near the contig start, one too long; sorted,
    as bcftools writes them."""
    b = seq1
    rows = [
        f"chr1 11 near_start {b[10]} {other(b[10])} . . .",
        f"chr1 101 rs1 {b[100]} {other(b[100])},{'G' if b[100] != 'G' else 'T'} 50 PASS .",
        f"chr1 151 . {b[150:153]} {''.join(other(x) for x in b[150:153])} . PASS .",
        f"chr1 201 del1 {b[200:205]} {b[200]},<DEL> . PASS SVTYPE=DEL;END=205",
        f"chr1 251 ins1 {b[250]} {b[250]}TTGCA . PASS .",
        f"chr1 301 . {b[300]} *,{other(b[300])} . PASS .",
        f"chr1 351 . {b[350]} . . . .",
        f"chr1 401 long {b[400:450]} {b[400]} . . .",
        "chrM 500 mito A G . . .",
    ]
    statuses = ["contig_end", "ok", "ok", "ok", "ok", "symbolic", "ok", "symbolic", "ok",
                "no_alt", "too_long", "missing_contig"]
    return write_vcf(tmp_path / "calls.vcf", rows), statuses


def test_real_world_vcf_from_the_api(tmp_path, genome, model, caplog):
    path, seqs = genome
    vcf, statuses = real_world_vcf(tmp_path, seqs["chr1"])
    result = score_variants(model, path, vcf, window=W)
    frame = result.frame
    assert list(frame.columns) == ["chrom", "pos", "id", "ref", "alt", "score", "ref_ll",
                                   "alt_ll", "window_start", "window_end", "status"]
    assert frame["status"].tolist() == statuses
    assert result.n_records == 9 and result.n_scored == 6
    assert result.counts == {"ok": 6, "symbolic": 2, "no_alt": 1, "contig_end": 1,
                             "too_long": 1, "missing_contig": 1}
    scored = frame["status"] == "ok"
    assert frame.loc[scored, "score"].notna().all() and frame.loc[~scored, "score"].isna().all()
    assert frame["alt"].tolist()[4:7] == [seqs["chr1"][200], "<DEL>", seqs["chr1"][250] + "TTGCA"]
    # the two ALTs of rs1 share the REF window
    assert frame["ref_ll"].iloc[1] == frame["ref_ll"].iloc[2]
    assert "chrM" in caplog.text and "missing_contig" in caplog.text
    assert "2 symbolic" in result.summary() and "6 of 12 ALTs scored" in result.summary()


def test_real_world_vcf_from_the_cli_table_and_indexed_vcf(tmp_path, genome, model):
    path, seqs = genome
    vcf, statuses = real_world_vcf(tmp_path, seqs["chr1"])
    model.save_pretrained(tmp_path / "model")
    runner = CliRunner()
    table = tmp_path / "scores.tsv"
    args = ["score-variants", "--model", str(tmp_path / "model"), "--reference", str(path),
            str(vcf), "--window", str(W)]
    done = runner.invoke(cli, [*args, "-o", str(table)])
    assert done.exit_code == 0, done.output
    assert "6 of 12 ALTs scored" in done.output
    frame = pd.read_csv(table, sep="\t")
    api = score_variants(model, path, vcf, window=W).frame
    assert frame["status"].tolist() == statuses
    np.testing.assert_allclose(frame["score"], api["score"], rtol=1e-9)

    gz = tmp_path / "scored.vcf.gz"
    done = runner.invoke(cli, [*args, "-o", str(gz)])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "scored.vcf.gz.tbi").is_file()
    with pysam.VariantFile(str(gz)) as out:
        for key in ("MAMBADNA_LLR", "MAMBADNA_REF_LL", "MAMBADNA_ALT_LL", "MAMBADNA_STATUS"):
            assert out.header.info[key].number == "A"
        assert "mambadna_score_variants" in str(out.header)
        records = list(out.fetch("chr1", 99, 101))  # through the tabix index
        assert records[0].id == "rs1"
        assert records[0].info["MAMBADNA_LLR"] == pytest.approx(tuple(api["score"][1:3]),
                                                                abs=1e-4)
    with pysam.VariantFile(str(gz)) as out:
        everything = list(out)
    assert len(everything) == 9  # every input record, scored or not
    symbolic = next(r for r in everything if r.id == "del1")
    assert symbolic.info["MAMBADNA_STATUS"] == ("ok", "symbolic")
    assert symbolic.info["MAMBADNA_LLR"][1] is None

    done = runner.invoke(cli, [*args, "-o", str(gz)])
    assert done.exit_code == 1 and "already exists" in done.output
    done = runner.invoke(cli, [*args, "-o", str(table), "--force", "--no-rc-average"])
    assert done.exit_code == 0, done.output
    forward = score_variants(model, path, vcf, window=W, rc_average=False).frame
    np.testing.assert_allclose(pd.read_csv(table, sep="\t")["score"], forward["score"],
                               rtol=1e-9)


def test_a_vcf_without_contig_lines_is_written_back_with_them(tmp_path, genome, model):
    path, seqs = genome
    s = seqs["chr1"]
    bare = HEADER.replace("##contig=<ID=chr1,length=600>\n", "")
    vcf = write_vcf(tmp_path / "v.vcf", [f"chr1 201 . {s[200]} {other(s[200])} . . ."], bare)
    out = tmp_path / "v.scored.vcf.gz"
    score_variants(model, path, vcf, out, window=W)
    with pysam.VariantFile(str(out)) as scored:
        assert scored.header.contigs["chr1"].length == 600
        assert [r.info["MAMBADNA_STATUS"] for r in scored] == [("ok",)]


def test_parquet_output_keeps_the_provenance(tmp_path, genome, model):
    import json

    import pyarrow.parquet as pq

    path, seqs = genome
    vcf, statuses = real_world_vcf(tmp_path, seqs["chr1"])
    out = tmp_path / "s.parquet"
    score_variants(model, path, vcf, out, window=W)
    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"mambadna"])
    assert meta["window"] == W and meta["rc_average"] is True
    assert table.to_pandas()["status"].tolist() == statuses


def test_ref_mismatch_is_an_error_naming_the_line_unless_skipped_or_warned(
        tmp_path, genome, model, caplog):
    path, seqs = genome
    b = seqs["chr1"][200]
    vcf = write_vcf(tmp_path / "v.vcf", [f"chr1 101 . {seqs['chr1'][100]} T . . .",
                                         f"chr1 201 bad {other(b)} {b} . . ."])
    line = HEADER.count("\n") + 2
    with pytest.raises(InputError, match=rf"v.vcf:{line}: REF '{other(b)}' at chr1:201 "
                                         r"does not match the reference"):
        score_variants(model, path, vcf, window=W)
    with pytest.raises(InputError, match="does not match"):
        score_variants(model, path, vcf, tmp_path / "o.tsv", window=W)
    assert not list(tmp_path.glob("*o.tsv*"))  # nothing half-written, no temporary left
    skipped = score_variants(model, path, vcf, window=W, on_ref_mismatch="skip").frame
    assert skipped["status"].tolist() == ["ok", "ref_mismatch"]
    warned = score_variants(model, path, vcf, window=W, on_ref_mismatch="warn").frame
    assert warned["status"].tolist() == ["ok", "ok"]
    assert f"v.vcf:{line}" in caplog.text and "scored with the VCF's REF" in caplog.text
    done = CliRunner().invoke(cli, ["score-variants", "--model", "x", "--reference",
                                    str(path), str(vcf), "-o", str(tmp_path / "o.tsv"),
                                    "--on-ref-mismatch", "nope"])
    assert done.exit_code == 2


def test_bed_regions_edges_and_refusals(tmp_path, genome, model):
    path, seqs = genome
    s = seqs["chr1"]
    vcf = write_vcf(tmp_path / "v.vcf", [f"chr1 {p + 1} . {s[p]} {other(s[p])} . . ."
                                         for p in (10, 100, 300, 590)])
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\nchr1\t90\t101\nchr1\t580\t600\n")
    frame = score_variants(model, path, vcf, window=W, bed_regions=bed).frame
    assert frame["pos"].tolist() == [101, 591]
    assert frame["status"].tolist() == ["ok", "contig_end"]
    shifted = score_variants(model, path, vcf, window=W, edge="shift").frame
    assert shifted["status"].tolist() == ["ok"] * 4
    assert shifted["window_start"].min() == 0 and shifted["window_end"].max() == 600

    unsorted = write_vcf(tmp_path / "u.vcf", [f"chr1 301 . {s[300]} {other(s[300])} . . .",
                                              f"chr1 101 . {s[100]} {other(s[100])} . . ."])
    with pytest.raises(InputError, match="not sorted"):
        score_variants(model, path, unsorted, tmp_path / "o.vcf.gz", window=W)
    assert not (tmp_path / "o.vcf.gz").exists()
    with pytest.raises(ConfigError, match="bidirectional"):
        score_variants(MambaDNA(ModelConfig(d_model=8, n_layer=1, bidirectional=True)), path,
                       vcf, window=W)
    with pytest.raises(ConfigError, match="edge"):
        ScoreOptions(edge="wrap")
    with gzip.open(tmp_path / "v.vcf.gz", "wt") as handle:
        handle.write((tmp_path / "v.vcf").read_text())
    with pytest.raises(FormatError, match=r"plain gzip.*bgzip"):
        score_variants(model, path, tmp_path / "v.vcf.gz", window=W)
    pysam.tabix_compress(str(tmp_path / "v.vcf"), str(tmp_path / "v.bgz.vcf.gz"))
    assert len(score_variants(model, path, tmp_path / "v.bgz.vcf.gz", window=W).frame) == 4


# ---------------------------------------------------------------------- a trained model


MOTIF = "GATTACAGCTTGCA"


def motif_genome(rng, length: int) -> tuple[str, list[int]]:
    """Random DNA with MOTIF planted every ~40 bases; returns the sequence and motif starts."""
    pieces, starts, at = [], [], 0
    while at < length:
        gap = int(rng.integers(15, 35))
        pieces.append("".join(rng.choice(list("ACGT"), gap)))
        at += gap
        starts.append(at)
        pieces.append(MOTIF)
        at += len(MOTIF)
    return "".join(pieces)[:length], [s for s in starts if s + len(MOTIF) <= length]


def train_motif_model(rng) -> MambaDNA:
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig(d_model=32, n_layer=2, d_state=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = encode(motif_genome(rng, 40_000)[0])
    from mambadna.model import lm_loss

    for _ in range(120):
        starts = rng.integers(0, len(data) - 128, 16)
        batch = np.stack([data[s:s + 128] for s in starts])
        flip = rng.random(16) < 0.5  # both strands, as pretraining does
        batch[flip] = reverse_complement(batch[flip])
        tokens = torch.from_numpy(batch.astype(np.int64))
        loss = lm_loss(model(tokens), tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.slow
def test_a_variant_breaking_a_learned_motif_scores_lower_than_neutral_ones(tmp_path,
                                                                         write_fasta):
    rng = np.random.default_rng(0)
    model = train_motif_model(rng)
    seq, starts = motif_genome(np.random.default_rng(1), 3000)
    ref = write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    pysam.faidx(str(ref))
    inside = {s + 7 for s in starts[3:-3]}  # the motif's 8th base
    planted = sorted(inside)[:12]
    motif_bases = {s + k for s in starts for k in range(len(MOTIF))}
    neutral = [p for p in range(200, 2800, 97) if all(abs(p - q) > 3 for q in motif_bases)][:12]
    rows = [f"chr1 {p + 1} . {seq[p]} {other(seq[p])} . . ." for p in sorted(planted + neutral)]
    frame = score_variants(model, ref, write_vcf(tmp_path / "v.vcf", rows), window=W).frame
    scores = dict(zip(frame["pos"] - 1, frame["score"]))
    broken = np.array([scores[p] for p in planted])
    background = np.array([scores[p] for p in neutral])
    assert broken.max() < np.median(background) - 1.0
    assert np.median(broken) < np.median(background) - 3.0
