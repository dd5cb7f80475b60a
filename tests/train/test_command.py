"""``mambadna pretrain`` / ``finetune`` on the command line: options from the configs, YAML with
flags overriding it, clear errors, and one real two-process DDP run (gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from mambadna.cli import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny 'species' (different GC) with train/val files and a manifest."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    rows = ["path\tlabel\tsplit"]
    for label, gc in (("at", 0.3), ("gc", 0.7)):
        for split in ("train", "val"):
            p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
            seq = "".join(rng.choice(list("ACGT"), 3000, p=p))
            (folder / f"{label}.{split}.fa").write_text(f">{label}_{split}\n{seq}\n")
            rows.append(f"{label}.{split}.fa\t{label}\t{split}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return folder


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_shows_the_config_fields_and_the_slurm_launch():
    result = invoke("pretrain", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for option in ("--genome", "--store", "--seq-len", "--warmup-start", "--tokens-per-step",
                   "--devices", "--num-nodes", "--strategy", "--resume", "--config"):
        assert option in text
    assert "Window length in bases" in text and "[default: 1024]" in text
    assert "srun mambadna pretrain" in text
    finetune = " ".join(invoke("finetune", "--help").output.split())
    assert "--from" in finetune and "--manifest" in finetune and "--class-weights" in finetune


def test_pretrain_with_yaml_and_overriding_flags(files, tmp_path):
    options = tmp_path / "pretrain.yaml"
    options.write_text(f"genomes: [{files / 'at.train.fa'}]\nseq_len: 64\nbatch_size: 2\n"
                       "max_steps: 50\nval_every: 2\nnum_workers: 0\nmodel: {n_layer: 1}\n")
    run = tmp_path / "run"
    result = invoke("pretrain", "--config", options, "--max-steps", 2, "-o", run,
                    "--val-genome", files / "at.val.fa")
    assert result.exit_code == 0, result.output
    assert f"model: {run / 'model'}" in result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["max_steps"] == 2 and saved["seq_len"] == 64  # flag over YAML over default
    assert saved["resolved"]["model"]["n_layer"] == 1
    assert saved["resolved"]["split"]["rule"] == "given"
    again = invoke("pretrain", "--config", options, "-o", run)
    assert again.exit_code == 1 and "--resume to continue it" in again.output
    resumed = invoke("pretrain", "-o", run, "--resume", "--max-steps", 3)
    assert resumed.exit_code == 0, resumed.output  # the rest comes from RUN_DIR/config.yaml
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "{bad}"], "unknown key(s) 'sequence_length'"),
    (["--genome", "{missing}"], "missing.fa"),
    (["--genome", "{genome}", "--resume"], "--resume: no checkpoint to continue from"),
    (["--genome", "{genome}", "--seq-len", "1000", "--warmup-start", "256",
      "--warmup-stage", "5"], "seq-len 1000 is not reachable"),
])
def test_pretrain_errors_are_one_line_and_exit_1(files, tmp_path, args, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sequence_length: 10\n")
    values = {"bad": bad, "missing": tmp_path / "missing.fa", "genome": files / "at.train.fa"}
    result = invoke("pretrain", "-o", tmp_path / "run",
                    *[a.format(**{k: str(v) for k, v in values.items()}) for a in args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_finetune_from_scratch_on_the_command_line(files, tmp_path):
    run = tmp_path / "fine"
    result = invoke("finetune", "--manifest", files / "manifest.tsv", "--preset", "tiny",
                    "-o", run, "--seq-len", 64, "--batch-size", 4, "--max-steps", 2,
                    "--val-every", 1, "--val-windows", 2, "--num-workers", 0,
                    "--class-weights", "at=2,gc=1", "--pooling", "mean")
    assert result.exit_code == 0, result.output
    assert (run / "model" / "labels.json").read_text().split() == ["[", '"at",', '"gc"', "]"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["class_weights"] == {"at": 2.0, "gc": 1.0}
    assert saved["resolved"]["labels"] == ["at", "gc"]
    assert (run / "confusion_matrix.csv").is_file() and (run / "metrics.csv").is_file()
    neither = invoke("finetune", "--manifest", files / "manifest.tsv", "-o", tmp_path / "x")
    assert neither.exit_code == 1 and "either --from MODEL_DIR or --preset" in neither.output


def _pretrain_process(run, *args, env):
    return subprocess.run(
        [sys.executable, "-m", "mambadna", "pretrain", "-o", str(run), "--num-workers", "0",
         "--accelerator", "cpu", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # ~25 s: three launches of one or two processes
def test_two_process_ddp_run_on_cpu_resumes_on_two_then_one(files, tmp_path):
    """Lightning's DDP launcher re-runs the command in a second process (gloo): rank 0
    prepares the run folder, rank 1 waits for it, both train, rank 0 exports. The run
    resumes on two processes, then on one: --tokens-per-step holds the global batch (2 x 2
    windows, then 1 x 4) and each attempt starts where the last checkpoint ended."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MAMBADNA_RUN_ID", None)
    done = _pretrain_process(run, "--genome", files / "at.train.fa", "--seq-len", 64,
                             "--tokens-per-step", 256, "--max-steps", 2, "--val-every", 2,
                             "--log-every", 1, "--devices", 2, "--strategy", "ddp",
                             "--verbose", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr  # Lightning's own line: --verbose
    assert done.stdout.count("run folder:") == 1  # printed by rank 0 only
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["resolved"]["world_size"] == 2 and saved["resolved"]["tokens_per_step"] == 256
    assert saved["resolved"]["batch_size_per_device"] == 2
    assert (run / "model" / "model.safetensors").is_file()
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    for attempt, (devices, steps, per_device) in enumerate([(2, 4, 2), (1, 6, 4)], 1):
        extra = ["--strategy", "ddp"] if devices > 1 else []
        done = _pretrain_process(run, "--resume", "--max-steps", steps, "--devices", devices,
                                 *extra, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        start = (run / "logs" / f"version_{attempt}" / "start_step").read_text()
        assert int(start) == steps - 2  # continued from the last checkpoint
        assert torch.load(last, weights_only=True)["global_step"] == steps
        saved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]
        assert (saved["world_size"], saved["batch_size_per_device"]) == (devices, per_device)
        assert saved["tokens_per_step"] == 256
    metrics = pd.read_csv(run / "metrics.csv").dropna(subset=["train_loss"])
    assert sorted(metrics["step"]) == list(range(1, 7)), metrics  # a row per step, 3 attempts
    assert np.isfinite(metrics["train_loss"]).all()
