"""Pretraining end to end on a simulated genome: it learns, it resumes exactly, it refuses bad
input before training, and it writes the run folder of docs/architecture.md."""

from __future__ import annotations

import json
import os

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from mambadna.alphabet import encode
from mambadna.errors import ConfigError, InputError, InputFileError, OutputExistsError
from mambadna.train import PretrainConfig, pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """One simulated great-ape genome: chr1+chr2 train, chr3 val, chr4 test (100 kb)."""
    from mambadna.simulate import simulate_species

    out = tmp_path_factory.mktemp("sim")
    result = simulate_species(out / "apes", species=["human"], length=100_000, seed=5)
    return result.split_fasta["human"]


def order0_bits(path) -> float:
    from mambadna.io import read_records

    tokens = np.concatenate([encode(r.sequence) for r in read_records(path)])
    p = np.bincount(tokens, minlength=10)[5:9].astype(float)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum())


def settings(genome, out, **kw) -> dict:
    base = dict(genomes=[str(genome["train"])], out_dir=str(out), preset="tiny", seq_len=64,
                batch_size=4, max_steps=6, val_every=3, val_windows=8, log_every=1,
                num_workers=0, seed=1)
    return {**base, **kw}


def config(genome, out, **kw) -> PretrainConfig:
    return PretrainConfig(**settings(genome, out, **kw))


@pytest.mark.slow  # ~14 s: 100 training steps
def test_pretraining_beats_the_order0_entropy(genome, tmp_path):
    # Validation on held-out regions of the same chromosomes (the default split for a file
    # with two equal records), so it shares their base composition: the order-0 entropy of
    # the file is what predicting base frequencies would reach.
    run = pretrain(config(genome, tmp_path / "run", seq_len=128, max_steps=100, val_every=50,
                          val_windows=32, val_fraction=0.2, log_every=25))
    h0 = order0_bits(genome["train"])
    val = run.metrics.dropna(subset=["val_bpb"])["val_bpb"].to_numpy()
    assert len(val) == 2 and val[-1] < val[0]
    assert run.final["val_bpb"] < h0 - 0.03, (run.final, h0)  # learnt context, not counts
    assert run.final["val_ppl"] == pytest.approx(np.exp(run.final["val_loss"]), rel=1e-5)
    for name in ("model", "model_best"):
        card = json.loads((tmp_path / "run" / name / "config.json").read_text())
        assert card["num_labels"] == 0 and card["training_info"]["task"] == "next-base pretraining"
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert {"train_loss", "train_bpb", "val_loss", "val_bpb", "lr", "seq_len"} <= set(
        pd.read_csv(tmp_path / "run" / "metrics.csv").columns)


class Interrupt(pl.Callback):
    """Ctrl-C when micro-batch ``index`` (0-based) is about to start."""

    def __init__(self, index: int) -> None:
        self.index = index

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.index:
            raise KeyboardInterrupt


@pytest.mark.parametrize(("accumulate", "cut"), [(1, 3), (2, 7)])  # 7: inside step 4 of 2
def test_interrupt_and_resume_matches_an_uninterrupted_run(genome, tmp_path, accumulate, cut):
    warmup = dict(warmup_start=32, warmup_stage=2, accumulate=accumulate)
    whole = pretrain(config(genome, tmp_path / "whole", **warmup))
    with pytest.raises(SystemExit):  # Lightning exits after saving on Ctrl-C
        pretrain(config(genome, tmp_path / "cut", **warmup), callbacks=[Interrupt(cut)])
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").is_file()
    resumed = pretrain(config(genome, tmp_path / "cut", resume=True, **warmup))
    a = whole.metrics.dropna(subset=["train_loss"]).set_index("step")
    b = resumed.metrics.dropna(subset=["train_loss"]).set_index("step")
    assert list(b.index) == list(range(1, 7))  # one row per step (steps done), none lost
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["lr"], a["lr"], rtol=1e-6)
    assert list(b["seq_len"]) == [32, 32, 64, 64, 64, 64]  # warmup: 2 steps at 32
    attempts = sorted(p.name for p in (tmp_path / "cut" / "logs").iterdir())
    assert attempts == ["version_0", "version_1"]


def test_bad_input_fails_before_training(genome, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="--resume: no checkpoint"):
        pretrain(config(genome, run, resume=True))
    with pytest.raises(InputFileError, match=r"missing\.fa"):
        pretrain(config(genome, run, genomes=[str(tmp_path / "missing.fa")]))
    assert not run.exists()  # nothing left behind by a run that never started
    with pytest.raises(ConfigError, match="not reachable"):
        pretrain(config(genome, run, seq_len=96, warmup_start=64, warmup_stage=1))
    with pytest.raises(ConfigError, match=r"not reachable.*max-steps is 6"):
        pretrain(config(genome, run, seq_len=256, warmup_start=32, warmup_stage=2))
    with pytest.raises(ConfigError, match="long enough for a window of 100000"):
        pretrain(config(genome, run, seq_len=100_000))
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--resume to continue it, --force"):
        pretrain(config(genome, run))
    with pytest.raises(OutputExistsError, match="not a run folder"):
        pretrain(config(genome, run, force=True))
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_never_unpickles_code(genome, tmp_path, payload):
    from mambadna.errors import UnsafeFileError
    from mambadna.train.run import load_checkpoint

    run = tmp_path / "run"
    pretrain(config(genome, run, max_steps=3))
    last = run / "checkpoints" / "last.ckpt"
    assert set(load_checkpoint(last)) >= {"state_dict", "optimizer_states", "loops"}
    good = last.read_bytes()
    torch.save({"state_dict": {}, "evil": payload}, last)
    with pytest.raises(UnsafeFileError, match=r"refused.*would run code") as info:
        pretrain(config(genome, run, max_steps=6, resume=True))
    assert info.value.path == str(last) and "Fix:" in str(info.value)
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        pretrain(config(genome, run, max_steps=6, resume=True))
    assert not payload.marker.exists()
    last.write_bytes(good)  # the genuine checkpoint still resumes (weights_only=True)
    assert pretrain(config(genome, run, max_steps=6, resume=True)).final


KILLED_RUN = """
import os, signal, sys
import lightning.pytorch as pl
import torch
from mambadna.train import PretrainConfig, pretrain
from mambadna.train.callbacks import BestCheckpoint

torch.set_num_threads(1)
# Validation never improves in this run: last.ckpt must be rewritten all the same.
BestCheckpoint.check_monitor_top_k = lambda self, trainer, current=None: False


class Kill(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup: like the OOM killer


pretrain(PretrainConfig(**eval(sys.argv[2])), callbacks=[Kill()])
"""


@pytest.mark.slow  # two training runs in subprocesses, 7-9 s each
@pytest.mark.parametrize("signum, at, saved_at", [("SIGKILL", 5, 4), ("SIGTERM", 2, 3)])
def test_killed_run_resumes_to_the_end_of_an_uninterrupted_run(genome, tmp_path, signum, at,
                                                                saved_at):
    import signal
    import subprocess
    import sys

    from safetensors.torch import load_file

    kw = dict(max_steps=6, val_every=2)
    whole = pretrain(config(genome, tmp_path / "whole", **kw))
    script = KILLED_RUN.replace("signal.SIGKILL", f"signal.{signum}")
    proc = subprocess.run([sys.executable, "-c", script, str(at),
                           repr(settings(genome, tmp_path / "cut", **kw))],
                          capture_output=True, text=True, timeout=300)
    # SIGKILL: no cleanup at all; SIGTERM: the step in progress ends, last.ckpt is saved, and
    # the exit status says the run was stopped (Lightning's own exit would be 0)
    expected = -signal.SIGKILL if signum == "SIGKILL" else 128 + signal.SIGTERM
    assert proc.returncode == expected, proc.stderr[-3000:]
    checkpoints = tmp_path / "cut" / "checkpoints"
    # SIGKILL as step 6 starts, after step 4's validation (which did not improve): last.ckpt
    # is step 4, written every --val-every steps; SIGTERM as step 3 starts: saved at its end
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == saved_at
    assert not list(checkpoints.glob("best-*"))
    resumed = pretrain(config(genome, tmp_path / "cut", resume=True, **kw))
    start = (tmp_path / "cut" / "logs" / "version_1" / "start_step").read_text()
    assert int(start) == saved_at
    a = whole.metrics.dropna(subset=["train_loss"]).set_index("step")
    b = resumed.metrics.dropna(subset=["train_loss"]).set_index("step")
    assert list(b.index) == list(range(1, 7))
    np.testing.assert_array_equal(b["train_loss"], a["train_loss"])
    final_a = load_file(whole.model_dir / "model.safetensors")
    final_b = load_file(resumed.model_dir / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)  # bit-identical
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.parametrize("read_only", [False, True])
def test_full_or_read_only_disk_is_one_line_error(genome, tmp_path, small_filesystem,
                                                   read_only):
    from click.testing import CliRunner

    from mambadna.cli import cli

    folder = small_filesystem("64k", read_only=read_only)  # the 100 kb genome's store: > 64k
    result = CliRunner().invoke(cli, ["pretrain", "--genome", str(genome["train"]), "-o",
                                      str(folder / "run"), "--preset", "tiny", "--seq-len",
                                      "64", "--max-steps", "2", "--num-workers", "0"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: {folder / 'run'}") and "cannot write" in last
    assert ("read-only" if read_only else "No space left") in last and "Fix:" in last
    assert "Traceback" not in result.output
    assert os.listdir(folder) == []  # the run folder this run created is gone


def test_a_model_too_large_for_memory_fails_before_the_run_folder(genome, tmp_path):
    with pytest.raises(ConfigError, match=r"more than the .* GiB of memory available") as info:
        pretrain(config(genome, tmp_path / "run", model={"d_model": 1 << 20, "n_layer": 64}))
    assert "d_model up to" in info.value.fix
    assert not (tmp_path / "run").exists()
