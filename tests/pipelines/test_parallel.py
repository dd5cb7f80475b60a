"""``--devices N`` on CPU: N torch.distributed processes (gloo), each writing one part of a
pyarrow dataset, merged into the single-device output; one rank's error stops all ranks with
the error message and no output; the dataset folders of killed runs (and only those) are
removed by the next run (issues 19, 21, 23)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pysam
import pytest
import torch
from click.testing import CliRunner

from mambadna.atomic import temporary_name
from mambadna.cli import cli
from mambadna.model import MambaDNA, ModelConfig
from mambadna.pipelines.embed import embed_on_devices
from mambadna.pipelines.run import RunOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=2))
    return model.save_pretrained(tmp_path_factory.mktemp("parallel") / "model",
                                 training_info={"seq_len": 32})


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def embed_cli(*args):
    return CliRunner().invoke(cli, ["embed", *map(str, args), "--quiet"])


@pytest.mark.slow  # ~15 s: two spawned processes
def test_cli_embed_on_two_cpu_processes_equals_one(tmp_path, model_dir, write_fasta,
                                                   random_dna):
    fasta = write_fasta(tmp_path / "g.fa", {f"r{i}": random_dna(40 + 30 * i, seed=i)
                                            for i in range(5)})
    one = embed_cli("--model", model_dir, fasta, "-o", tmp_path / "one.parquet",
                    "--device", "cpu")
    two = embed_cli("--model", model_dir, fasta, "-o", tmp_path / "two.parquet",
                    "--device", "cpu", "--devices", 2)
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    a, b = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    assert a.drop(columns="embedding").equals(b.drop(columns="embedding"))  # rows and order
    assert all((x == y).all() for x, y in zip(a.embedding, b.embedding))  # same CPU maths
    assert hidden(tmp_path) == []  # the parts' dataset folder is gone


@pytest.fixture
def slow_and_bad(tmp_path, random_dna):
    """An indexed FASTA: record 0 (rank 0) takes minutes on a CPU, record 1 (rank 1) holds an
    invalid character that the rank meets at once."""
    path = tmp_path / "g.fa"
    bad = random_dna(50, seed=1)
    path.write_text(f">long\n{random_dna(1_000_000)}\n>bad\n{bad[:10]}X{bad[10:]}\n")
    pysam.faidx(str(path))
    return path


@pytest.mark.slow  # ~15 s: two spawned processes
def test_one_ranks_error_stops_all_ranks(tmp_path, model_dir, slow_and_bad):
    out = tmp_path / "e.parquet"
    started = time.monotonic()
    result = embed_cli("--model", model_dir, slow_and_bad, "-o", out, "--window", "64",
                       "--device", "cpu", "--devices", 2)
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(f"error: {slow_and_bad}") and "record 'bad'" in message
    assert "position 10" in message and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1  # the error, nothing else
    # rank 0 alone needs ~2 minutes for its 1 Mb (8.7 k bases/s at window 64 on this CPU)
    assert elapsed < 60, elapsed
    assert not out.exists() and hidden(tmp_path) == []


def test_the_next_run_removes_a_killed_runs_dataset_folder_and_nothing_else(
        tmp_path, model_dir, write_fasta, random_dna):
    fasta = write_fasta(tmp_path / "g.fa", {"r0": random_dna(64), "r1": random_dna(64, 1)})
    out = tmp_path / "e.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    ours = temporary_name(out)
    stale = ours.with_name(ours.name.replace(f"-{os.getpid()}.", f"-{dead}."))
    stale.mkdir()
    (stale / "part-00000.parquet").write_bytes(b"left by a killed run")
    live = tmp_path / ours.name  # a live process's (this one's): kept
    live.mkdir()
    (tmp_path / ".user-notes").write_text("not ours")
    embed_on_devices(model_dir, fasta, out, RunOptions(window=32, devices=2, device="cpu",
                                                       progress=False),
                     pool="mean", force=False, row_group_size=None, processes=False)
    assert not stale.exists()
    assert hidden(tmp_path) == sorted([live.name, ".user-notes"])


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow  # ~20 s: a run killed while its ranks work, then a second run
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", ["SIGKILL", "SIGTERM"])
def test_a_killed_run_leaves_no_worker_and_no_folder_behind(tmp_path, model_dir, write_fasta,
                                                            random_dna, signum):
    """SIGTERM: the ranks end and the folder goes at once (exit status 143); SIGKILL: the
    ranks die with their parent and the next write into the folder removes it."""
    long = write_fasta(tmp_path / "g.fa", {"a": random_dna(400_000), "b": random_dna(400_000)})
    pysam.faidx(str(long))
    out = tmp_path / "e.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mambadna", "embed", "--model",
                             str(model_dir), str(long), "-o", str(out), "--window",
                             "64", "--device", "cpu", "--devices", "2", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until both ranks write their parts
        folders = [p for p in tmp_path.iterdir() if p.name.startswith(".e.parquet.")]
        if folders and len(list(folders[0].glob("part-*.parquet"))) == 2:
            break
        time.sleep(0.2)
    workers = [c for c in _children(proc.pid)
               if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(workers) == 2 and len(folders) == 1
    os.kill(proc.pid, getattr(signal, signum))
    status = proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)  # died with the parent
    assert not out.exists()
    if signum == "SIGTERM":
        assert status == 128 + signal.SIGTERM and hidden(tmp_path) == []
        return
    assert status == -signal.SIGKILL and folders[0].is_dir()
    small = write_fasta(tmp_path / "s.fa", {"r0": random_dna(64)})
    again = embed_cli("--model", model_dir, small, "-o", tmp_path / "s.parquet",
                      "--device", "cpu")
    assert again.exit_code == 0, again.output
    assert hidden(tmp_path) == []  # the killed run's dataset folder is gone
