"""The context-length study end to end at toy sizes: its tables, plots and checks."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ConfigError
from mambadna.experiments import ContextCurveConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_context_curve_writes_the_curve_and_the_perplexity_table(tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(cli, [
        "experiment", "context-curve", "-o", str(out), "--species", "human,orangutan",
        "--genome-length", "60000", "--insertion-rate", "1000", "--lengths", "64,256",
        "--preset", "tiny", "--tokens-per-step", "512", "--pretrain-steps", "3",
        "--finetune-steps", "3", "--num-workers", "0", "--eval-overlap", "2"])
    assert result.exit_code == 0, result.output
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve["window"]) == [64, 256]
    assert (curve["chance"] == 0.5).all()
    assert curve["n_windows"].iloc[0] > curve["n_windows"].iloc[1] > 0
    for prefix in ("", "kmer_"):
        ba = curve[f"{prefix}balanced_accuracy"]
        assert ((curve[f"{prefix}ba_low"] <= ba) & (ba <= curve[f"{prefix}ba_high"])).all()
    ppl = pd.read_csv(out / "perplexity.csv")
    assert list(ppl["window"]) == [64, 256]
    # The same bases at every window: a longer window predicts more of them.
    assert ppl["n_predicted"].iloc[1] > ppl["n_predicted"].iloc[0]
    assert (ppl["bits_per_base"] > 1.0).all() and (ppl["bits_per_base"] < 4.5).all()
    for name in ("curve.png", "perplexity.png", "report.md", "experiment.json"):
        assert (out / name).stat().st_size > 0
    assert "| 256 |" in (out / "report.md").read_text()
    assert (out / "eval_256" / "metrics.json").is_file()


def test_context_curve_checks_its_settings(tmp_path):
    with pytest.raises(ConfigError, match="not a multiple of the longest window"):
        ContextCurveConfig(out_dir=str(tmp_path), lengths=(1024, 4096), tokens_per_step=6000)
    with pytest.raises(ConfigError, match="finetune_from"):
        ContextCurveConfig(out_dir=str(tmp_path), finetune_from="checkpoint")
    with pytest.raises(ConfigError, match="at least 16"):
        ContextCurveConfig(out_dir=str(tmp_path), lengths=(8,), tokens_per_step=64)
