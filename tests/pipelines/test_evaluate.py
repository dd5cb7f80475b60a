"""``mambadna evaluate`` end to end on a tiny untrained classifier and small FASTA files made by
the tests (two labels with different GC content): every file written, metrics.json recomputed
from predictions.tsv, the k-mer baseline scored on the model's windows, bad input failing
before any work with nothing left behind, and the ``baseline fit`` / ``baseline predict``
commands.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import mambadna as md
from mambadna.alphabet import encode
from mambadna.baselines import KmerNaiveBayes
from mambadna.cli import cli
from mambadna.errors import ConfigError, InputError
from mambadna.model import MambaDNA, ModelConfig
from mambadna.pipelines import evaluation_report
from mambadna.pipelines.metrics import classification_metrics

LABELS = ["low", "high"]
GC = {"low": 0.3, "high": 0.7}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(folder, num_labels=2, labels=LABELS):
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=1,
                                             num_labels=num_labels, pooling="mean"))
    return model.save_pretrained(folder, labels=labels, training_info={"seq_len": 64})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("model") / "model")


def dna(rng, length: int, gc: float) -> str:
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(np.array(list("ACGT"))[rng.choice(4, length, p=p)])


@pytest.fixture
def data(tmp_path, write_fasta):
    """Per label: a train file (one 3 kb record) and a test file (records of 300, 150 and 20
    bases: 5, 2 and no windows of 64 with the default min-window 32)."""
    rng = np.random.default_rng(0)
    records = {}
    lines = ["path\tlabel\tsplit"]
    for label, gc in GC.items():
        write_fasta(tmp_path / f"{label}.train.fa", {"c1": dna(rng, 3000, gc)})
        records[label] = {"t1": dna(rng, 300, gc), "t2": dna(rng, 150, gc),
                          "t3": dna(rng, 20, gc)}
        write_fasta(tmp_path / f"{label}.test.fa", records[label])
        lines += [f"{label}.train.fa\t{label}\ttrain", f"{label}.test.fa\t{label}\ttest"]
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, records


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def left_behind(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ end to end


def test_cli_writes_everything_and_metrics_match_the_predictions(tmp_path, model_dir, data):
    manifest, _ = data
    out = tmp_path / "eval"
    result = run("evaluate", "--model", model_dir, "--manifest", manifest, "-o", out,
                 "--baseline", "kmer", "--k", "4", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    for text in ("balanced accuracy (95% CI)", "accuracy (95% CI)", "chance", "majority",
                 "k-mer baseline (k=4)", "per-class recall", "low", "high",
                 "predictions.tsv", "metrics.json", "report.md"):
        assert text in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.png", "confusion.png", "metrics.json", "per_class_recall.png",
        "predictions.tsv", "report.md"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert left_behind(tmp_path) == []

    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(table.columns) == [
        "level", "source", "record_id", "start", "end", "n_windows", "true_label",
        "predicted_label", "probability", "prob_low", "prob_high", "kmer_predicted_label",
        "kmer_probability"]
    assert table.groupby("level").size().to_dict() == {"records": 6, "windows": 14}
    metrics = json.loads((out / "metrics.json").read_text())
    for level in ("records", "windows"):
        rows = table[(table.level == level) & table.predicted_label.notna()]
        recomputed = classification_metrics(rows.true_label, rows.predicted_label, LABELS)
        assert metrics[level] == recomputed
        kmer = classification_metrics(rows.true_label, rows.kmer_predicted_label, LABELS)
        assert metrics["baselines"]["kmer"][level] == kmer
    assert metrics["records"]["n"] == 4  # the two 20-base records have no window
    assert metrics["windows"]["chance"] == 0.5
    meta = metrics["metadata"]
    assert (meta["window"], meta["stride"], meta["split"], meta["records_without_windows"]) \
        == (64, 64, "test", 2)
    assert meta["manifest"] == str(manifest) and meta["model"] == str(model_dir)
    assert {"date", "version", "weights_sha256"} <= set(meta)
    assert metrics["baselines"]["kmer"]["model"]["k"] == 4
    # GC content separates the labels: the k-mer baseline must find it on these windows.
    assert metrics["baselines"]["kmer"]["windows"]["balanced_accuracy"] >= 0.8
    report = (out / "report.md").read_text()
    assert "| records | 4 |" in report and "![comparison](comparison.png)" in report


def test_kmer_baseline_scores_the_model_windows(tmp_path, model_dir, data):
    manifest, records = data
    result = md.evaluate(model_dir, manifest, tmp_path / "eval", baseline="kmer", k=4,
                         window=100, stride=50, device="cpu", progress=False)
    table = result.predictions
    windows = table[table.level == "windows"]
    t1 = windows[(windows.record_id == "t1") & (windows.true_label == "low")]
    assert list(zip(t1.start, t1.end)) == [(0, 100), (50, 150), (100, 200), (150, 250),
                                           (200, 300)]
    nb = md.fit_kmer_baseline(manifest, k=4)
    tokens = [encode(records[label][rid][start:end]) for label, rid, start, end in
              zip(windows.true_label, windows.record_id, windows.start, windows.end)]
    assert windows.kmer_predicted_label.tolist() == nb.predict(tokens).tolist()
    np.testing.assert_allclose(windows.kmer_probability, nb.predict_proba(tokens).max(1))
    # A record's call: softmax of the mean of its windows' log-posteriors.
    log_probs = nb.predict_log_proba(tokens[:len(t1)]).mean(0)
    probs = np.exp(log_probs - np.logaddexp.reduce(log_probs))
    first = table[(table.level == "records") & (table.record_id == "t1")].iloc[0]
    assert first.kmer_probability == pytest.approx(probs.max())
    assert result.metrics["metadata"]["window"] == 100


def test_train_manifest_saved_baseline_and_force(tmp_path, model_dir, data):
    manifest, _ = data
    test_only = tmp_path / "test.tsv"
    lines = manifest.read_text().splitlines()
    test_only.write_text("\n".join([lines[0], *[x for x in lines if x.endswith("test")]]))
    with pytest.raises(ConfigError, match="--train-manifest"):
        md.evaluate(model_dir, test_only, tmp_path / "e", baseline="kmer")
    first = md.evaluate(model_dir, test_only, tmp_path / "e", baseline="kmer", k=4,
                        train_manifest=manifest, device="cpu", progress=False)
    saved = md.fit_kmer_baseline(manifest, k=4).save(tmp_path / "nb")
    again = md.evaluate(model_dir, test_only, tmp_path / "e", baseline=saved, device="cpu",
                        progress=False, force=True)
    assert again.metrics["baselines"]["kmer"]["windows"] == \
        first.metrics["baselines"]["kmer"]["windows"]
    no_baseline = md.evaluate(model_dir, test_only, tmp_path / "e", device="cpu",
                              progress=False, force=True)
    assert "baselines" not in no_baseline.metrics
    assert "kmer_predicted_label" not in pd.read_csv(tmp_path / "e" / "predictions.tsv",
                                                     sep="\t")
    assert left_behind(tmp_path) == []


# ------------------------------------------------------------------ bad input


def _bad_manifests(tmp_path, manifest):
    text = manifest.read_text()
    cases = {
        "unknown": (text.replace("high.test.fa\thigh", "high.test.fa\tcat"),
                    "label 'cat' of high.test.fa is not a label of the model (its labels: "
                    "low, high)"),
        "missing": (text.replace("low.test.fa", "nope.fa"), "'nope.fa'"),
        "empty": ("path\tlabel\tsplit\n", "manifest lists no files"),
        "no_test": ("\n".join(text.splitlines()[:2]) + "\n",
                    "the manifest has no test rows (it has train rows)"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / f"{name}.tsv").write_text(content)
    return {name: (tmp_path / f"{name}.tsv", message) for name, (_, message) in cases.items()}


def test_bad_input_exits_1_with_a_clear_message_and_no_output(tmp_path, model_dir, data):
    manifest, _ = data
    out = tmp_path / "eval"
    for name, (path, message) in _bad_manifests(tmp_path, manifest).items():
        result = run("evaluate", "--model", model_dir, "--manifest", path, "-o", out,
                     "--device", "cpu", "--quiet")
        assert result.exit_code == 1, (name, result.output)
        assert message in result.output, (name, result.output)
        assert result.output.startswith("error: ")
        assert not out.exists() and left_behind(tmp_path) == [], name
    result = run("evaluate", "--model", tmp_path / "nope", "--manifest", manifest, "-o", out)
    assert result.exit_code == 1 and "model folder not found" in result.output
    lm = _model(tmp_path / "lm", num_labels=0, labels=None)
    result = run("evaluate", "--model", lm, "--manifest", manifest, "-o", out)
    assert result.exit_code == 1 and "no classification head" in result.output
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run("evaluate", "--model", model_dir, "--manifest", manifest, "-o", out)
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in \
        result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_an_error_while_writing_leaves_nothing(tmp_path, model_dir, data, monkeypatch):
    manifest, _ = data

    def broken(metrics, folder):
        (folder / "half.png").write_bytes(b"\x89PNG")
        raise RuntimeError("disk full")

    monkeypatch.setattr(evaluation_report, "write_plots", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        md.evaluate(model_dir, manifest, tmp_path / "eval", device="cpu", progress=False)
    assert not (tmp_path / "eval").exists() and left_behind(tmp_path) == []


def test_no_window_at_all_is_an_error(tmp_path, model_dir, data):
    manifest, _ = data
    with pytest.raises(InputError, match="long enough for a window"):
        md.evaluate(model_dir, manifest, tmp_path / "eval", window=5000, device="cpu",
                    progress=False)
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------------------ the baseline commands


def test_baseline_fit_and_predict_commands(tmp_path, data):
    manifest, _ = data
    folder = tmp_path / "kmer"
    result = run("baseline", "fit", "--manifest", manifest, "-o", folder, "--k", "4")
    assert result.exit_code == 0, result.output
    assert "k=4" in result.output and "low: 5,994" in result.output  # 2 * (3000 - 3)
    assert KmerNaiveBayes.load(folder).labels == LABELS
    again = run("baseline", "fit", "--manifest", manifest, "-o", folder)
    assert again.exit_code == 1 and "already exists" in again.output

    out = tmp_path / "p.tsv"
    inputs = [tmp_path / "low.test.fa", tmp_path / "high.test.fa"]
    result = run("baseline", "predict", "--baseline", folder, *inputs, "-o", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["source", "record_id", "start", "end", "predicted_label",
                                   "probability", "n_windows", "prob_low", "prob_high"]
    assert table.predicted_label.tolist() == ["low"] * 3 + ["high"] * 3  # whole records
    windowed = tmp_path / "w.tsv"
    result = run("baseline", "predict", "--baseline", folder, inputs[0], "-o", windowed,
                 "--window", "64", "--per-window")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(windowed, sep="\t")
    assert table.n_windows[table.start.isna()].tolist() == [5, 2, 0]
    assert len(table) == 3 + 7
    bad = run("baseline", "predict", "--baseline", tmp_path, inputs[0], "-o", tmp_path / "x.tsv")
    assert bad.exit_code == 1 and "missing baseline.json" in bad.output
