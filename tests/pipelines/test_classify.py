"""Classification pipeline: the right species on held-out simulated chromosomes (a shipped tiny
classifier, made by tests/fixtures/make_tiny_classifier.py), columns and per-record aggregation,
per-window rows, strands, streaming, output formats, bad input, several-GPU merge, the command
line (in-process and one real subprocess).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import mambadna as md
from mambadna.alphabet import encode, reverse_complement
from mambadna.cli import cli
from mambadna.errors import ConfigError, ModelFileError, OutputExistsError
from mambadna.model import MambaDNA, ModelConfig, load_model
from mambadna.pipelines.classify import classify_on_devices, classify_records
from mambadna.pipelines.run import RunOptions

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_classifier"
LABELS = ["ape", "bat", "cat"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    torch.manual_seed(1)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=2, num_labels=3,
                                             pooling="mean"))
    return model.save_pretrained(tmp_path_factory.mktemp("cls") / "model", labels=LABELS,
                                 training_info={"seq_len": 64})


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    return load_model(classifier_dir)


@pytest.fixture
def genome(tmp_path, write_fasta, random_dna):
    records = {"chr1": random_dna(200, seed=1), "chr2": random_dna(64, seed=2),
               "chr3": random_dna(150, seed=3), "tiny": random_dna(20, seed=4)}
    return write_fasta(tmp_path / "genome.fa", records), records


def window_log_probs(model, seq: str) -> np.ndarray:
    tokens = torch.from_numpy(encode(seq).astype(np.int64))[None]
    with torch.inference_mode():
        return torch.log_softmax(model.classify_logits(tokens), -1)[0].numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------ held-out species


def _simulated_test_chromosomes(tmp_path):
    info = json.loads((FIXTURE / "config.json").read_text())["training_info"]
    sim = md.simulate_species(tmp_path / "sim", **info["simulation"])
    files = {s: sim.split_fasta[s]["test"] for s in info["simulation"]["species"]}
    for species, path in files.items():
        if hashlib.sha256(path.read_bytes()).hexdigest() != info["test_fasta_sha256"][species]:
            pytest.fail(f"the simulator's output changed since {FIXTURE.name} was made: "
                        "re-run tests/fixtures/make_tiny_classifier.py")
    return files


def test_tiny_classifier_finds_the_species_of_held_out_chromosomes(tmp_path):
    files = _simulated_test_chromosomes(tmp_path)
    out = tmp_path / "predictions.tsv"
    # The one real subprocess of the pipelines: the installed command end to end, on the first
    # 60 kb of each species' held-out chromosome (a region of the indexed FASTA).
    command = [sys.executable, "-m", "mambadna", "classify", "--model", str(FIXTURE),
               *map(str, files.values()), "-o", str(out), "--per-window", "--quiet",
               "--batch-size", "32", "--region", "chr3:1-60000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert f"{out}: 2 records" in done.stdout
    table = pd.read_csv(out, sep="\t")
    # Each species' test FASTA holds one chromosome (chr3); rows come in input order, each
    # record's row before its windows.
    records = table[table.start.isna()]
    # a region's rows: its sequence, the region asked for, windows in genome coordinates
    assert records.record_id.tolist() == ["chr3"] * 2
    assert records.region.tolist() == ["chr3:1-60000"] * 2
    assert records.source.tolist() == [str(f) for f in files.values()]
    assert records.predicted_label.tolist() == list(files)  # human, then orangutan
    truth = np.array(list(files))[table.start.isna().cumsum() - 1]
    windows = table.start.notna().to_numpy()
    accuracy = float((table.predicted_label.to_numpy()[windows] == truth[windows]).mean())
    assert windows.sum() == 2 * 234 and accuracy > 0.75, accuracy  # chance: 0.5


# ------------------------------------------------------------------ columns and aggregation


def test_columns_and_per_record_aggregation(classifier, genome):
    path, records = genome
    table = md.classify(classifier, path, per_window=True, progress=False)
    assert list(table.columns) == ["source", "record_id", "start", "end", "predicted_label",
                                   "probability", "n_windows", *[f"prob_{x}" for x in LABELS]]
    prob_cols = [f"prob_{x}" for x in LABELS]
    assert (table.source == str(path)).all()
    rows = table[table.start.isna()].set_index("record_id")
    windows = table[table.start.notna()]
    assert rows.n_windows.to_dict() == {"chr1": 3, "chr2": 1, "chr3": 2, "tiny": 0}
    assert (windows.n_windows == 1).all()
    for row in windows.itertuples():
        seq = records[row.record_id][int(row.start):int(row.end)]
        expected = softmax(window_log_probs(classifier, seq))
        np.testing.assert_allclose([getattr(row, c) for c in prob_cols], expected, atol=1e-5)
    for name, group in windows.groupby("record_id"):
        mean_log = np.log(group[prob_cols].to_numpy()).mean(0)
        probs = softmax(mean_log)  # normalised geometric mean of the windows
        np.testing.assert_allclose(rows.loc[name, prob_cols].to_numpy(float), probs,
                                   atol=1e-5)
        assert rows.loc[name, "predicted_label"] == LABELS[int(probs.argmax())]
        assert rows.loc[name, "probability"] == pytest.approx(probs.max(), abs=1e-6)
    # Each record's row comes first, then its windows by start.
    assert table.record_id.tolist()[:4] == ["chr1"] * 4 and pd.isna(table.start[0])
    plain = md.classify(classifier, path, progress=False)
    assert list(plain.columns) == ["source", "record_id", "predicted_label", "probability",
                                   "n_windows", *prob_cols]
    pd.testing.assert_frame_equal(plain, rows.reset_index()[plain.columns], check_dtype=False)


def test_records_without_windows_are_reported_not_fatal(classifier, genome, caplog):
    path, _ = genome
    with caplog.at_level(logging.WARNING, logger="mambadna"):
        table = md.classify(classifier, path, progress=False)
    tiny = table.set_index("record_id").loc["tiny"]
    assert tiny.n_windows == 0 and pd.isna(tiny.predicted_label)
    assert np.isnan(tiny.probability) and np.isnan(tiny.prob_ape)
    assert "1 of 4 records are shorter than --min-window (32 bases)" in caplog.text
    everything_short = md.classify(classifier, path, window=1000, progress=False)
    assert (everything_short.n_windows == 0).all()


def test_rc_average_averages_strand_log_probabilities(classifier, genome):
    path, records = genome
    table = md.classify(classifier, path, per_window=True, rc_average=True, progress=False)
    row = table[table.start.notna()].iloc[0]
    seq = records[row.record_id][int(row.start):int(row.end)]
    rc = md.decode(reverse_complement(encode(seq)))
    expected = softmax((window_log_probs(classifier, seq) + window_log_probs(classifier, rc))
                       / 2)
    np.testing.assert_allclose(row[[f"prob_{x}" for x in LABELS]].to_numpy(float), expected,
                               atol=1e-5)
    assert table.attrs["mambadna"]["strand_handling"] == "mean log-probability of both strands"


def test_stream_classifies_windows_with_the_record_before_them(classifier, genome):
    path, records = genome
    streamed = md.classify(classifier, path, per_window=True, stream=True, progress=False)
    windowed = md.classify(classifier, path, per_window=True, progress=False)
    assert streamed[["record_id", "start", "end", "n_windows"]].equals(
        windowed[["record_id", "start", "end", "n_windows"]])
    tokens = torch.from_numpy(encode(records["chr1"]).astype(np.int64))[None]
    with torch.inference_mode():
        hidden = classifier.hidden_states(tokens)[0]  # the whole record in one pass
        for row in streamed[(streamed.record_id == "chr1") & streamed.start.notna()].itertuples():
            piece = hidden[int(row.start):int(row.end)].mean(0)
            expected = torch.softmax(classifier.classifier(piece), -1).numpy()
            np.testing.assert_allclose([row.prob_ape, row.prob_bat, row.prob_cat], expected,
                                       atol=1e-5)
    prob_cols = [f"prob_{x}" for x in LABELS]
    first = streamed.start == 0
    np.testing.assert_allclose(streamed.loc[first, prob_cols].to_numpy(float),
                               windowed.loc[first, prob_cols].to_numpy(float), atol=1e-5)
    later = streamed.start > 0
    assert np.abs(streamed.loc[later, prob_cols].to_numpy(float)
                  - windowed.loc[later, prob_cols].to_numpy(float)).max() > 1e-4


# ------------------------------------------------------------------ outputs and errors


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".parquet"])
def test_output_formats_round_trip(tmp_path, classifier, genome, suffix):
    path, _ = genome
    out = tmp_path / f"pred{suffix}"
    table = md.classify(classifier, path, per_window=True, out=out, progress=False)
    if suffix == ".parquet":
        back = pd.read_parquet(out)
        meta = json.loads(pq.read_schema(out).metadata[b"mambadna"])
        assert meta["aggregation"] == "softmax of the mean of window log-probabilities"
        assert meta["labels"] == LABELS and meta["window"] == 64
    else:
        back = pd.read_csv(out, sep="\t" if suffix == ".tsv" else ",")
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    np.testing.assert_allclose(back.prob_bat.to_numpy(float), table.prob_bat.to_numpy(float),
                               rtol=1e-5)
    assert back.predicted_label.isna().sum() == 1  # the record without windows
    assert back.start.isna().sum() == 4  # one row per record, then window rows


def test_bad_model_and_output_paths(tmp_path, classifier_dir, genome):
    path, _ = genome
    with pytest.raises(ModelFileError, match="model folder not found"):
        md.classify(tmp_path / "none", path)
    torch.manual_seed(0)
    lm = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=1))
    with pytest.raises(ConfigError, match="no classification head"):
        md.classify(lm, path, out=tmp_path / "p.tsv")
    with pytest.raises(ConfigError, match=r"extension '\.txt'"):
        md.classify(classifier_dir, path, out=tmp_path / "p.txt")
    with pytest.raises(ConfigError, match="output folder does not exist"):
        md.classify(classifier_dir, path, out=tmp_path / "no" / "p.tsv")
    (tmp_path / "p.tsv").write_text("keep")
    with pytest.raises(OutputExistsError):
        md.classify(classifier_dir, path, out=tmp_path / "p.tsv")
    assert (tmp_path / "p.tsv").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genome.fa", "p.tsv"]


def test_ranks_merge_predictions_in_input_order(classifier_dir, genome):
    path, _ = genome
    single = md.classify(classifier_dir, path, per_window=True, progress=False)
    merged = classify_on_devices(classifier_dir, path, RunOptions(devices=3, progress=False),
                                 per_window=True, device_type="cpu", processes=False)
    frame = merged.frame.drop(columns="record_index")
    pd.testing.assert_frame_equal(frame, single, check_dtype=False, atol=1e-6)
    assert merged.metadata["devices"] == 3 and merged.n_windows == 6
    one = classify_records(classifier_dir, path, RunOptions(progress=False), per_window=True)
    assert merged.bases == one.bases > 0  # the summary's bases add up over the ranks


def test_cli_classify_in_process(tmp_path, classifier_dir, genome, write_fasta):
    path, _ = genome
    out = tmp_path / "p.csv"
    args = ["classify", "--model", str(classifier_dir), str(path), "-o", str(out),
            "--window", "50", "--stride", "25", "--min-window", "10", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table.n_windows.tolist() == [7, 2, 5, 1]  # windows(len, 50, 25, 10)
    assert "4 records, 15 windows" in result.output
    fasta = write_fasta(tmp_path / "q.fa", {"x": "ACGT" * 10})
    missing = CliRunner().invoke(cli, ["classify", "--model", str(tmp_path / "nope"),
                                       str(fasta), "-o", str(tmp_path / "q.tsv")])
    assert missing.exit_code == 1 and "model folder not found" in missing.output
    assert not (tmp_path / "q.tsv").exists()
