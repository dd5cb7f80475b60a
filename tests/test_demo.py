"""The embedded demo runs end to end (tiny sizes) and reports what it measured."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import OutputExistsError


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out), "--genome-length", "60000",
                                      "--seq-len", "128", "--pretrain-steps", "4",
                                      "--finetune-steps", "4"])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "accuracy" in report and "chance 50.0%" in report
    assert "Confusion matrix" in report and "human-orangutan" in report
    assert "2222x the realistic rate" in report
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert set(predictions["true_label"]) == {"human", "orangutan"}
    windows = predictions[predictions["start"].notna()]
    assert len(windows) >= 5 and (windows["end"] - windows["start"] <= 128).all()
    table = pq.read_table(out / "embeddings.parquet")
    assert table.num_rows == len(windows)
    assert (out / "finetune" / "model" / "labels.json").exists()


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
