"""The embedded demo runs end to end (tiny sizes) and reports what it measured."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import OutputExistsError


@pytest.mark.slow  # every step of the package, ~40 s on 2 cores
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out), "--genome-length", "60000",
                                      "--seq-len", "128", "--pretrain-steps", "4",
                                      "--finetune-steps", "4"])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "Balanced accuracy" in report and "chance 50.0%" in report
    assert "majority baseline" in report and "k-mer naive Bayes" in report
    assert "Confusion matrix" in report and "human-orangutan" in report
    assert "insertion_rate 1000.0" in report
    # The report's numbers are those of its predictions: recompute them.
    metrics = json.loads((out / "report.json").read_text())
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    windows = predictions[predictions["level"] == "windows"]
    assert set(windows["true_label"]) == {"human", "orangutan"}
    assert len(windows) >= 5 and (windows["end"] - windows["start"] <= 128).all()
    assert metrics["windows"]["n"] == len(windows)
    correct = windows["true_label"] == windows["predicted_label"]
    assert metrics["windows"]["accuracy"] == pytest.approx(correct.mean())
    recall = correct.groupby(windows["true_label"]).mean()
    assert metrics["windows"]["balanced_accuracy"] == pytest.approx(recall.mean())
    for label, value in recall.items():
        assert metrics["windows"]["per_class"][label]["recall"] == pytest.approx(value)
        n = int((windows["true_label"] == label).sum())
        assert f"| {label} | {n} | {value:.1%} |" in report
    kmer = windows["true_label"] == windows["kmer_predicted_label"]
    assert metrics["baselines"]["kmer"]["windows"]["accuracy"] == pytest.approx(kmer.mean())
    majority = windows["true_label"].value_counts().max() / len(windows)
    assert metrics["windows"]["majority_baseline"] == pytest.approx(majority)
    table = pq.read_table(out / "embeddings.parquet")
    assert table.num_rows == len(windows)
    assert (out / "finetune" / "model" / "labels.json").exists()
    # the figures: matplotlib PNGs, shown in report.md
    for name in ("pretrain_curves.png", "finetune_curves.png", "evaluation/confusion.png",
                 "evaluation/comparison.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"]({name})" in report


def test_demo_needs_two_species(tmp_path):
    from mambadna.demo import DemoConfig
    from mambadna.errors import ConfigError

    with pytest.raises(ConfigError, match="at least two different species"):
        DemoConfig(out_dir=str(tmp_path), species=("human", "human"))


def test_demo_refuses_an_existing_folder(tmp_path):
    from mambadna.demo import DemoConfig, run_demo

    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(OutputExistsError, match="--force"):
        run_demo(DemoConfig(out_dir=str(tmp_path)))
    assert (tmp_path / "keep.txt").read_text() == "user data"
