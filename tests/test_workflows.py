"""The Snakemake workflow: every config dry-runs, bad configs are rejected by the schema, the
report script builds its plots, and the demo config runs end to end with tiny settings.

Needs snakemake (the ``[workflows]`` extra) in the test environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

WORKFLOW = Path(__file__).resolve().parent.parent / "workflows"
CONFIGS = sorted(p for p in (WORKFLOW / "config").glob("*.yaml"))


def snakemake(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run snakemake on the workflow with tmp_path as working directory (results, .snakemake)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(WORKFLOW / "Snakefile"),
               "--directory", str(tmp_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a Snakemake process: 2-3 s
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_dry_runs(tmp_path, config):
    result = snakemake(tmp_path, "-n", "--configfile", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for rule in ("fetch", "split", "tokenize", "pretrain", "embed", "report"):
        assert f"rule {rule}:" in out
    if config.stem != "hg38_pretrain":
        assert "rule finetune:" in out and "rule classify:" in out
        assert "--per-window" in out
    if config.stem == "demo":
        assert "rule simulate:" in out and "--base-url results/demo/simulated" in out


@pytest.mark.slow  # a Snakemake process: 2-3 s
def test_slurm_profile_requests_gpus(tmp_path):
    result = snakemake(tmp_path, "-n", "--profile", str(WORKFLOW / "profiles" / "slurm"))
    assert result.returncode == 0, result.stdout + result.stderr
    pretrain = result.stdout.split("rule pretrain:")[1].split("rule ")[0]
    assert "slurm_partition=gpu" in pretrain and "gpu=1" in pretrain


@pytest.mark.slow  # a Snakemake process: 2-3 s
def test_schema_rejects_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  seq_len: -5\n")
    result = snakemake(tmp_path, "-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert "seq_len" in result.stdout + result.stderr


# --- the report script --------------------------------------------------------------------------

def _fake_run(folder: Path, steps: int) -> Path:
    folder.mkdir(parents=True)
    rows = [{"step": s, "epoch": 0, "train_loss": 1.4 - s / 100} for s in range(0, steps, 10)]
    rows += [{"step": steps, "epoch": 0, "val_loss": 1.1, "val_acc": 0.6}]
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    return folder


def test_report_script(tmp_path):
    sys.path.insert(0, str(WORKFLOW / "scripts"))
    try:
        import report
    finally:
        sys.path.pop(0)
    store = tmp_path / "tokens" / "test"
    store.mkdir(parents=True)
    pd.DataFrame({"record": ["chr4"], "length": [1000], "n_count": [10]}).to_parquet(
        store / "index.parquet")
    predictions = {}
    for label, predicted in (("human", ["human", "human", "chimp"]), ("chimp", ["chimp"] * 3)):
        path = tmp_path / f"{label}.tsv"
        pd.DataFrame({"record_id": ["chr4"] * 4, "predicted_label": [predicted[0], *predicted],
                      "probability": 0.9, "n_windows": [3, 1, 1, 1],
                      "start": [None, 0, 100, 200], "end": [None, 100, 200, 300]}).to_csv(
            path, sep="\t", index=False)
        predictions[label] = path
    vectors = np.zeros((2, 8), dtype=np.float32)
    table = pa.table({"record_id": ["chr4", "chr4"],
                      "embedding": pa.FixedSizeListArray.from_arrays(vectors.ravel(), 8)})
    pq.write_table(table, tmp_path / "emb.parquet")
    out = tmp_path / "report"
    report.main(["--title", "t", "--store", f"test={store}",
                 "--pretrain-run", str(_fake_run(tmp_path / "pre", 50)),
                 "--finetune-run", str(_fake_run(tmp_path / "fine", 30)),
                 *[f"--predictions={k}={v}" for k, v in predictions.items()],
                 "--embeddings", str(tmp_path / "emb.parquet"), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit"] == "window" and summary["n"] == 6
    assert summary["confusion"] == [[2, 1], [0, 3]] and summary["accuracy"] == pytest.approx(5 / 6)
    assert summary["embeddings"] == [{"file": "emb.parquet", "windows": 2, "dimensions": 8}]
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 5  # 2 charts per run (loss, accuracy) + confusion matrix
    for svg in out.glob("*.svg"):  # matplotlib's SVG files, not hand-drawn ones
        text = svg.read_text()
        assert text.startswith("<?xml") and "<svg" in text and "Matplotlib" in text
        assert svg.stat().st_size > 5000
    assert (out / "confusion_matrix.svg").exists() and "report.md" in {p.name for p in
                                                                       out.iterdir()}


# --- end to end ---------------------------------------------------------------------------------

# Two of the five simulated species keep the number of jobs (and torch start-ups) down.
TRAIN = "--num-workers 0 --log-every 1 --val-every 2 --val-windows 4"
ONE_CORE = "{gpu: 0, threads: 1, mem_mb: 2000, runtime: 10}"  # inference jobs run side by side
TINY = f"""\
run_name: demo
data: {{only: [human, chimpanzee]}}
simulate: {{length: 60000, seed: 1}}
pretrain: {{preset: tiny, seq_len: 128, batch_size: 4, max_steps: 4, extra_args: "{TRAIN}"}}
finetune: {{preset: tiny, seq_len: 128, batch_size: 4, max_steps: 4, extra_args: "{TRAIN}"}}
classify: {{window: 512, batch_size: 8, resources: {ONE_CORE}}}
embed: {{window: 512, batch_size: 8, resources: {ONE_CORE}}}
"""


def _missing_commands() -> list[str]:
    from mambadna.cli import cli

    needed = ("simulate", "data", "tokenize", "pretrain", "finetune", "classify", "embed")
    return [name for name in needed if name not in cli.commands]


@pytest.mark.slow  # ~17 s: the whole Snakemake workflow
@pytest.mark.skipif(bool(_missing_commands()),
                    reason=f"mambadna commands not available yet: {_missing_commands()}")
def test_demo_runs_end_to_end(tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY)
    result = snakemake(tmp_path, "--cores", "2", "--configfile",
                       str(WORKFLOW / "config" / "demo.yaml"), str(tiny), timeout=600)
    logs = "\n".join(p.read_text() for p in (tmp_path / "results/demo/logs").glob("*.log")) \
        if (tmp_path / "results/demo/logs").exists() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs[-3000:]
    run = tmp_path / "results" / "demo"
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["labels"][:2] == ["human", "chimpanzee"]
    assert summary["n"] > 0 and 0.0 <= summary["accuracy"] <= 1.0
    assert (run / "report" / "pretraining_loss_curves.svg").exists()
    assert (run / "report" / "report.html").read_text().count("<svg") >= 3
    assert len(list((run / "embeddings").glob("*.parquet"))) == 2


# --- the SLURM recipe (workflows/slurm) --------------------------------------------------------


@pytest.mark.parametrize("resumed", [False, True])
def test_the_sbatch_script_launches_one_pretrain_task_per_gpu(tmp_path, resumed):
    """Run the sbatch script with a stand-in ``srun`` that records its arguments; they must
    parse as `mambadna pretrain` options (click refuses unknown ones) and ask for all GPUs."""
    from mambadna.cli import cli

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    (bin_dir / "srun").chmod(0o755)
    run = tmp_path / "run"
    if resumed:
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SRUN_ARGS": str(tmp_path / "args"),
           "RUN_DIR": str(run), "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_CPUS_PER_TASK": "8"}
    done = subprocess.run(["bash", str(WORKFLOW / "slurm" / "pretrain.sbatch"), "--max-steps",
                           "10"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:3] == ["--kill-on-bad-exit=1", "mambadna", "pretrain"]
    ctx = cli.commands["pretrain"].make_context("pretrain", args[3:])
    assert (str(ctx.params["devices"]), ctx.params["num_nodes"]) == ("4", 2)
    assert ctx.params["strategy"] == "ddp" and ctx.params["max_steps"] == 10
    assert ctx.params["out_dir"] == str(run) and bool(ctx.params["resume"]) == resumed
