"""``pretrain`` / ``finetune --context-parallel``: a run whose windows are split over 2 gloo
processes trains the weights of a one-process run on the same batches (2 replicas x 2 ranks:
those of 2-process DDP); the options are checked before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from safetensors.numpy import load_file

from mambadna.cli import cli


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cp")
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 6000))
    path = folder / "g.fa"
    path.write_text(f">chr1\n{seq}\n")
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two tiny 'species' (different GC) with train and val files."""
    folder = tmp_path_factory.mktemp("cp-finetune")
    rng = np.random.default_rng(1)
    rows = ["path\tlabel\tsplit"]
    for label, gc in (("at", 0.3), ("gc", 0.7)):
        for split in ("train", "val"):
            p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
            seq = "".join(rng.choice(list("ACGT"), 2000, p=p))
            (folder / f"{label}.{split}.fa").write_text(f">{label}_{split}\n{seq}\n")
            rows.append(f"{label}.{split}.fa\t{label}\t{split}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.tsv"


def _train(command, source, run, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MAMBADNA_RUN_ID", None)
    inputs = ["--genome", str(source)] if command == "pretrain" else \
        ["--manifest", str(source), "--preset", "tiny"]
    done = subprocess.run(
        [sys.executable, "-m", "mambadna", command, *inputs, "-o", str(run),
         "--seq-len", "64", "--batch-size", "2", "--max-steps", "3", "--val-every", "3",
         "--val-windows", "4", "--num-workers", "0", "--accelerator", "cpu", "--seed", "3",
         "--lr", "0.01", *extra], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _pretrain(genome, run, *extra):
    return _train("pretrain", genome, run, *extra)


@pytest.mark.slow  # ~25 s: one process, then two
def test_context_parallel_run_trains_the_weights_of_one_process(genome, tmp_path):
    _pretrain(genome, tmp_path / "one", "--devices", "1")
    _pretrain(genome, tmp_path / "cp", "--devices", "2", "--strategy", "ddp",
              "--context-parallel", "2")
    saved = yaml.safe_load((tmp_path / "cp" / "config.yaml").read_text())["resolved"]
    assert (saved["world_size"], saved["data_parallel"], saved["context_parallel"]) == (2, 1, 2)
    assert saved["tokens_per_step"] == 128  # one replica: the windows count once
    _same_weights(tmp_path / "one", tmp_path / "cp")
    metrics = [yaml.safe_load((tmp_path / r / "model" / "config.json").read_text())
               ["training_info"]["final_metrics"] for r in ("one", "cp")]
    assert metrics[1]["val_loss"] == pytest.approx(metrics[0]["val_loss"], rel=1e-5)


def _same_weights(run_a, run_b):
    """AdamW moves every weight by about lr per step whatever the gradient's size, so float
    rounding in a gradient near zero can show as a fraction of lr (0.01) in a few weights; a
    wrong gradient (a missing carry, a wrong scale, other batches) would move most weights.
    Both bounds allow such a few (at most 0.1 % of a tensor, or one weight of a smaller one such
    as a 512-weight conv kernel, by at most a tenth of lr): with either CPU convolution one or
    two weights of the whole model land 1.2-2.7x past the first bound."""
    one = load_file(run_a / "model" / "model.safetensors")
    split = load_file(run_b / "model" / "model.safetensors")
    assert one.keys() == split.keys()
    for name in one:
        diff = np.abs(split[name] - one[name])
        off = diff > 2e-6 + 2e-4 * np.abs(one[name])
        assert off.sum() <= max(1, 1e-3 * off.size) and diff.max() <= 1e-3, \
            (name, off.sum(), off.size, diff.max())


@pytest.mark.slow  # ~90 s: two processes, then four
def test_data_parallel_times_context_parallel_trains_the_weights_of_data_parallel(genome,
                                                                                   tmp_path):
    """World 4 = 2 replicas x 2 context-parallel ranks: the replicas draw the batches of a
    2-process DDP run and average their gradients as it does."""
    _pretrain(genome, tmp_path / "dp", "--devices", "2", "--strategy", "ddp")
    _pretrain(genome, tmp_path / "dpcp", "--devices", "4", "--strategy", "ddp",
              "--context-parallel", "2")
    saved = yaml.safe_load((tmp_path / "dpcp" / "config.yaml").read_text())["resolved"]
    assert (saved["world_size"], saved["data_parallel"], saved["context_parallel"]) == (4, 2, 2)
    assert saved["tokens_per_step"] == 256
    _same_weights(tmp_path / "dp", tmp_path / "dpcp")


@pytest.mark.slow  # ~45 s: one process, then two
def test_context_parallel_finetuning_trains_the_weights_of_one_process(manifest, tmp_path):
    """The classifier pools over both segments (mean pooling): same weights, same validation
    accuracy (each window counted once, not once per rank)."""
    _train("finetune", manifest, tmp_path / "one", "--devices", "1")
    _train("finetune", manifest, tmp_path / "cp", "--devices", "2", "--strategy", "ddp",
           "--context-parallel", "2")
    _same_weights(tmp_path / "one", tmp_path / "cp")
    metrics = [yaml.safe_load((tmp_path / r / "model" / "config.json").read_text())
               ["training_info"]["final_metrics"] for r in ("one", "cp")]
    assert metrics[1]["val_acc"] == metrics[0]["val_acc"]
    assert metrics[1]["val_loss"] == pytest.approx(metrics[0]["val_loss"], rel=1e-5)


def test_context_parallel_options_are_checked_before_training(genome, tmp_path):
    def run(*args):
        return CliRunner().invoke(cli, ["pretrain", "--genome", str(genome), "-o",
                                        str(tmp_path / "x"), "--accelerator", "cpu",
                                        "--num-workers", "0", *map(str, args)])

    wrong = run("--context-parallel", "2", "--devices", "1")
    assert wrong.exit_code == 1 and "does not divide the 1 devices" in wrong.output
    fsdp = run("--context-parallel", "2", "--strategy", "fsdp")
    assert fsdp.exit_code == 1 and "ddp strategy" in fsdp.output
    zero = run("--context-parallel", "0")
    assert zero.exit_code == 1 and "context-parallel must be at least 1" in zero.output
    assert not (tmp_path / "x").exists()
