"""What a training run tells: Lightning's tips and deprecation notices only with --verbose,
one step numbering in log lines, metrics.csv and checkpoints, and TensorBoard beside the CSV."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from mambadna.errors import ConfigError
from mambadna.train import PretrainConfig, pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    import numpy as np

    path = tmp_path_factory.mktemp("genome") / "g.fa"
    rng = np.random.default_rng(0)
    path.write_text("".join(f">chr{i}\n{''.join(rng.choice(list('ACGT'), 4000))}\n"
                            for i in (1, 2)))
    return path


def _config(genome, out, **kw) -> PretrainConfig:
    base = dict(genomes=[str(genome)], out_dir=str(out), preset="tiny", seq_len=32,
                batch_size=2, max_steps=4, val_every=2, val_windows=2, log_every=1,
                num_workers=0, val_fraction=0.2)
    return PretrainConfig(**{**base, **kw})


def test_quiet_by_default_and_one_step_numbering(genome, tmp_path, capfd, caplog):
    caplog.set_level("INFO")
    run = pretrain(_config(genome, tmp_path / "run"))
    err = capfd.readouterr().err + caplog.text
    for noise in ("Tip:", "GPU available", "TPU available", "deprecated", "`Trainer.fit`"):
        assert noise not in err, err
    # our lines stay (logger mambadna.train), numbered by optimizer steps done
    err = "\n".join(r.getMessage() for r in caplog.records if r.name == "mambadna.train")
    assert "step 1/4 |" in err and "step 4/4 |" in err
    assert "validation at step 2:" in err and "validation at step 4:" in err
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics.dropna(subset=["train_loss"])["step"]) == [1, 2, 3, 4]
    assert list(metrics.dropna(subset=["val_loss"])["step"]) == [2, 4]
    best = [p.name for p in (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")]
    val = metrics.dropna(subset=["val_loss"]).set_index("step")["val_loss"]
    assert best == [f"best-step={int(val.idxmin())}.ckpt"]  # the row of the best validation
    assert run.model_dir is not None


def test_verbose_shows_lightning_and_tensorboard_writes_events(genome, tmp_path, capfd,
                                                               caplog):
    pytest.importorskip("tensorboard")
    caplog.set_level("INFO")
    pretrain(_config(genome, tmp_path / "run", max_steps=2, verbose=True,
                     logger="tensorboard"))
    err = capfd.readouterr().err + caplog.text
    assert "GPU available" in err
    events = list((tmp_path / "run" / "tensorboard" / "version_0").glob("events.out.tfevents*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0].parent)).Reload().Scalars("train_loss")
    assert [s.step for s in scalars] == [1, 2]  # the numbering of metrics.csv
    assert list(pd.read_csv(tmp_path / "run" / "metrics.csv")
                .dropna(subset=["train_loss"])["step"]) == [1, 2]


def test_tensorboard_missing_is_a_clear_error(genome, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mambadna.cli import cli

    for module in ("tensorboard", "tensorboardX"):  # importing them fails, as if missing
        monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(cli, ["pretrain", "--genome", str(genome), "-o",
                                      str(tmp_path / "run"), "--logger", "tensorboard",
                                      "--num-workers", "0", "--max-steps", "1", "--seq-len",
                                      "32"])
    assert result.exit_code == 1, result.output
    assert "--logger tensorboard needs the tensorboard package" in result.output
    assert "pip install 'mambadna[tensorboard]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_logger_choices_are_checked():
    with pytest.raises(ConfigError, match="logger is 'wandb', expected one of csv, tensorboard"):
        PretrainConfig(genomes=["g.fa"], out_dir="run", logger="wandb")
