"""Outputs that join with the rest of a pipeline: the source column, genome coordinates with
--region, overlapping BAM regions, stdin and stdout, and BED for bedtools and genome browsers.

Real files are written in tmp_path (FASTA by the conftest helpers, BAM with pysam); the models
are tiny random ones (what is checked is where rows come from, not what a model predicts).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import mambadna as md
from mambadna.cli import cli
from mambadna.errors import ConfigError
from mambadna.io import read_records
from mambadna.model import MambaDNA, ModelConfig

pysam = pytest.importorskip("pysam")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = ["ape", "bat"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    torch.manual_seed(3)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=2, num_labels=2,
                                             pooling="mean"))
    return model.save_pretrained(tmp_path_factory.mktemp("cls") / "model", labels=LABELS,
                                 training_info={"seq_len": 50})


@pytest.fixture
def two_species(tmp_path, write_fasta, random_dna):
    """Two files, each with a chr1 (the case a source column exists for)."""
    a = write_fasta(tmp_path / "a.fa", {"chr1": random_dna(300, seed=1)})
    b = write_fasta(tmp_path / "b.fa", {"chr1": random_dna(200, seed=2),
                                        "chr2": random_dna(100, seed=3)})
    return a, b


def _bam(tmp_path, reference: str, reads: list[tuple[str, int, int]]):
    """A sorted, indexed BAM of reads (name, 0-based start, length) on chr1 = reference."""
    path = tmp_path / "reads.bam"
    header = {"HD": {"VN": "1.6", "SO": "coordinate"},
              "SQ": [{"SN": "chr1", "LN": len(reference)}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for name, start, length in sorted(reads, key=lambda r: r[1]):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.flag, read.reference_id = name, 0, 0
            read.reference_start, read.mapping_quality = start, 60
            read.query_sequence = reference[start:start + length]
            read.cigartuples = [(0, length)]
            out.write(read)
    pysam.index(str(path))
    return path


def _read_bed(path) -> tuple[list[str], pd.DataFrame]:
    """Header lines (track, #) and the rows, as bedtools reads a BED file."""
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.startswith(("track", "browser", "#"))]
    assert lines[:len(header)] == header  # header lines come first
    columns = header[-1].lstrip("#").split("\t")
    rows = pd.read_csv(io.StringIO("\n".join(lines[len(header):])), sep="\t", header=None,
                       names=columns, keep_default_na=False)
    return header, rows


# ------------------------------------------------------------------ source column


def test_same_record_name_in_two_files_is_told_apart(tmp_path, classifier_dir, two_species):
    a, b = two_species
    table = md.classify(classifier_dir, [a, b], progress=False, out=tmp_path / "p.parquet")
    assert table[["source", "record_id"]].values.tolist() == [
        [str(a), "chr1"], [str(b), "chr1"], [str(b), "chr2"]]
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.column("source").to_pylist() == [str(a), str(b), str(b)]
    meta = json.loads(back.schema.metadata[b"mambadna"])
    assert meta["inputs"] == [str(a), str(b)] and "input file" in meta["source"]
    out = tmp_path / "e.parquet"
    md.embed(classifier_dir, [a, b], out, progress=False)
    frame = pd.read_parquet(out)
    assert frame.groupby(["source", "record_id"], sort=False).size().to_dict() == {
        (str(a), "chr1"): 6, (str(b), "chr1"): 4, (str(b), "chr2"): 2}
    result = CliRunner().invoke(cli, ["classify", "--model", str(classifier_dir), str(a),
                                      str(b), "-o", str(tmp_path / "p.tsv"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "p.tsv", sep="\t")["source"].tolist() == [
        str(a), str(b), str(b)]


# ------------------------------------------------------------------ genome coordinates


def test_region_windows_are_in_genome_coordinates(tmp_path, classifier_dir, two_species):
    a, _ = two_species
    whole = md.embed(classifier_dir, a, window=50, progress=False)
    part = md.embed(classifier_dir, a, window=50, region="chr1:101-250", progress=False)
    assert part["record_id"].unique().tolist() == ["chr1"]
    assert part["region"].unique().tolist() == ["chr1:101-250"]
    assert part["start"].tolist() == [100, 150, 200] and part["end"].tolist() == [150, 200, 250]
    # the same bases give the same vector: rows join on (record_id, start, end)
    joined = part.merge(whole, on=["source", "record_id", "start", "end"])
    assert len(joined) == 3
    for x, y in zip(joined["embedding_x"], joined["embedding_y"]):
        np.testing.assert_allclose(x, y, atol=1e-5)
    table = md.classify(classifier_dir, a, window=50, per_window=True,
                        region=["chr1:101-250"], progress=False)
    assert list(table.columns[:5]) == ["source", "record_id", "region", "start", "end"]
    windows = table[table["start"].notna()]
    assert windows["start"].tolist() == [100, 150, 200]
    assert json.loads(json.dumps(table.attrs["mambadna"]))["regions"] == ["chr1:101-250"]


def test_the_kmer_baseline_reports_regions_as_classify_does(classifier_dir, two_species):
    from mambadna.alphabet import encode
    from mambadna.baselines import KmerNaiveBayes
    from mambadna.pipelines.baseline import predict_kmer

    a, _ = two_species
    nb = KmerNaiveBayes(k=3).fit([encode("ACGTTGCA" * 20), encode("GGGCCCAT" * 20)], LABELS)
    table = predict_kmer(nb, [a], window=50, per_window=True, region="chr1:101-250")
    model = md.classify(classifier_dir, a, window=50, per_window=True, region="chr1:101-250",
                        progress=False)
    columns = ["source", "record_id", "region", "start", "end"]
    assert list(table.columns[:5]) == columns
    pd.testing.assert_frame_equal(table[columns], model[columns], check_dtype=False)
    assert table["start"].dropna().tolist() == [100, 150, 200]
    # and the windows it scored are those bases: the same call as on the bases alone
    (record,) = read_records(a)
    window = record.sequence[150:200]
    expected = nb.predict_log_proba([encode(window)])[0]
    row = table[table["start"] == 150].iloc[0]
    np.testing.assert_allclose([row["prob_ape"], row["prob_bat"]], np.exp(expected), atol=1e-9)


def test_overlapping_bam_regions_read_each_read_once(tmp_path, classifier_dir, random_dna):
    reference = random_dna(1000, seed=7)
    reads = [("r100", 100, 60), ("r150", 150, 60), ("r400", 400, 60), ("r700", 700, 60)]
    bam = _bam(tmp_path, reference, reads)
    # chr1:121-200 finds r100 and r150; chr1:181-450 overlaps it (r150 again) and adds r400
    regions = ["chr1:121-200", "chr1:181-450", "chr1:121-200", "chr1:701-710"]
    records = list(read_records(bam, region=regions))
    assert [(r.name, r.region) for r in records] == [
        ("r100", "chr1:121-200"), ("r150", "chr1:121-200"), ("r400", "chr1:181-450"),
        ("r700", "chr1:701-710")]
    table = md.classify(classifier_dir, bam, window=60, region=regions, progress=False)
    assert table["record_id"].tolist() == ["r100", "r150", "r400", "r700"]
    assert table["region"].tolist()[2] == "chr1:181-450"
    result = CliRunner().invoke(cli, ["classify", "--model", str(classifier_dir), str(bam),
                                      "-o", str(tmp_path / "p.tsv"), "--quiet",
                                      "--region", "chr1:121-200", "--region", "chr1:1-1000"])
    assert result.exit_code == 0, result.output  # no duplicate-name error
    assert len(pd.read_csv(tmp_path / "p.tsv", sep="\t")) == 4


# ------------------------------------------------------------------ stdin and stdout


def test_classify_reads_stdin_and_writes_only_the_table_to_stdout(tmp_path, classifier_dir,
                                                                  random_dna):
    reference = random_dna(1000, seed=8)
    bam = _bam(tmp_path, reference, [("r1", 10, 80), ("r2", 300, 120)])
    result = CliRunner().invoke(cli, ["classify", "--model", str(classifier_dir), "-",
                                      "-o", "-", "--window", "40"], input=bam.read_bytes())
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout), sep="\t")  # nothing else on stdout
    assert table["record_id"].tolist() == ["r1", "r2"] and (table["source"] == "-").all()
    assert table["n_windows"].tolist() == [2, 3]
    assert "2 records" in result.stderr


def test_the_api_reads_a_pipe_too(tmp_path, classifier_dir, two_species, monkeypatch):
    import os
    import threading

    a, _ = two_species
    read_fd, write_fd = os.pipe()
    data = a.read_bytes()
    feeder = threading.Thread(target=lambda: os.write(write_fd, data) and os.close(write_fd))
    feeder.start()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(read_fd, "rb")))
    piped = md.embed(classifier_dir, "-", window=100, progress=False)
    feeder.join()
    from_file = md.embed(classifier_dir, a, window=100, progress=False)
    assert (piped["source"] == "-").all()
    assert piped["start"].tolist() == from_file["start"].tolist()
    np.testing.assert_allclose(np.stack(piped["embedding"]), np.stack(from_file["embedding"]))
    with pytest.raises(ConfigError, match="read only once"):
        md.embed(classifier_dir, "-", window=100, progress=False)


def test_ranks_cannot_share_stdin(classifier_dir):
    from mambadna.pipelines.classify import classify_on_devices
    from mambadna.pipelines.run import RunOptions

    with pytest.raises(ConfigError, match="read only once") as info:
        classify_on_devices(classifier_dir, "-", RunOptions(devices=2), per_window=False,
                            device_type="cpu", processes=False)
    assert "--devices 1" in info.value.fix


def test_embed_writes_tsv_to_stdout(tmp_path, classifier_dir, two_species):
    a, _ = two_species
    result = CliRunner().invoke(cli, ["embed", "--model", str(classifier_dir), str(a),
                                      "-o", "-", "--window", "100"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout), sep="\t")
    assert list(table.columns[:6]) == ["source", "record_id", "start", "end", "strand",
                                       "n_fraction"]
    assert [c for c in table.columns if c.startswith("emb_")] == [f"emb_{i}" for i in range(16)]
    frame = md.embed(classifier_dir, a, window=100, progress=False)
    np.testing.assert_allclose(table.filter(like="emb_").to_numpy(),
                               np.stack(frame["embedding"].to_numpy()), atol=1e-5)
    assert "3 windows" in result.stderr


def test_two_outputs_cannot_share_stdout(classifier_dir, two_species):
    with pytest.raises(ConfigError, match="standard output"):
        md.classify(classifier_dir, two_species[0], out="-", bed="-", progress=False)


# ------------------------------------------------------------------ BED


def test_classify_bed_is_bed6_plus_for_bedtools_and_tabix(tmp_path, classifier_dir,
                                                           two_species):
    a, b = two_species
    bed = tmp_path / "w.bed"
    table = md.classify(classifier_dir, [a, b], window=50, bed=bed, region=["chr1:51-200"],
                        progress=False)
    assert "start" not in table  # the table keeps its per-record shape
    header, rows = _read_bed(bed)
    assert header[0].startswith('track name="mambadna classify"') and "useScore=1" in header[0]
    assert list(rows.columns[:6]) == ["chrom", "start", "end", "name", "score", "strand"]
    assert list(rows.columns[6:]) == ["probability", "prob_ape", "prob_bat", "source",
                                      "region"]
    assert rows["chrom"].tolist() == ["chr1"] * 6 and rows["start"].tolist() == [50, 100,
                                                                                  150] * 2
    assert rows["score"].between(0, 1000).all() and set(rows["name"]) <= set(LABELS)
    assert (rows["score"] == (rows["probability"] * 1000).round()).all()
    assert rows["source"].tolist() == [str(a)] * 3 + [str(b)] * 3
    # without the track line and sorted (grep -v ^track | sort -k1,1 -k2,2n), tabix indexes
    # it as BED and finds the windows
    lines = [line for line in bed.read_text().splitlines() if not line.startswith("track")]
    body = sorted(lines[1:], key=lambda line: (line.split("\t")[0], int(line.split("\t")[1])))
    plain = tmp_path / "w.sorted.bed"
    plain.write_text("\n".join([lines[0], *body]) + "\n")
    indexed = pysam.tabix_index(str(plain), preset="bed", force=True)
    with pysam.TabixFile(indexed, parser=pysam.asBed()) as tabix:
        hits = list(tabix.fetch("chr1", 120, 130))
    assert [(h.start, h.end) for h in hits] == [(100, 150), (100, 150)]


def test_embed_bed_rows_join_back_to_the_embeddings(tmp_path, classifier_dir, two_species):
    a, b = two_species
    out, bed = tmp_path / "e.parquet", tmp_path / "e.bed"
    result = CliRunner().invoke(cli, ["embed", "--model", str(classifier_dir), str(a), str(b),
                                      "-o", str(out), "--bed", str(bed), "--window", "100",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    header, rows = _read_bed(bed)
    assert header[0].startswith('track name="mambadna embed"')
    frame = pd.read_parquet(out)
    assert rows["row"].tolist() == list(range(len(frame)))
    assert (rows[["chrom", "start", "end"]].to_numpy()
            == frame[["record_id", "start", "end"]].to_numpy()).all()
    assert rows["name"].tolist()[:2] == ["chr1:1-100", "chr1:101-200"]
    assert (rows["strand"] == "+").all() and (rows["score"] == 0).all()


@pytest.mark.slow
def test_a_samtools_style_pipe_into_the_installed_command(tmp_path, classifier_dir,
                                                           random_dna):
    reference = random_dna(1000, seed=9)
    bam = _bam(tmp_path, reference, [("r1", 10, 80), ("r2", 300, 120)])
    done = subprocess.run(
        [sys.executable, "-m", "mambadna", "classify", "--model", str(classifier_dir), "-",
         "-o", "-", "--window", "40", "--bed", str(tmp_path / "w.bed")],
        input=bam.read_bytes(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    table = pd.read_csv(io.BytesIO(done.stdout), sep="\t")
    assert table["record_id"].tolist() == ["r1", "r2"]
    assert len(_read_bed(tmp_path / "w.bed")[1]) == 5


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path, classifier_dir,
                                                             write_fasta, random_dna):
    # `mambadna embed ... -o - | head -1`: SIGPIPE's status, no traceback. The output (~3 MB)
    # is far more than a pipe holds, so the command is still writing when the reader stops.
    genome = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(40_000, seed=5)})
    command = [sys.executable, "-m", "mambadna", "embed", "--model", str(classifier_dir),
               str(genome), "-o", "-", "--window", "2", "--batch-size", "1024"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        header = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=300)
    assert header.startswith(b"source\trecord_id")
    assert proc.returncode == 141 and "Traceback" not in stderr, stderr
