"""The training benchmark (benchmarks/train.py) runs every configuration, records failures,
writes strict JSON.

benchmarks/ is not a package and not installed: tests import its scripts by file name with the
folder first on sys.path, as ``python benchmarks/train.py`` runs them (benchmarks/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from train import BenchResult, main, target_note  # benchmarks/train.py

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_on_cpu_records_each_configuration(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["--device", "cpu", "--preset", "nope", "--preset", "tiny", "--seq-len", "32",
                 "--tokens-per-step", "64", "--steps", "1", "--warmup", "1", "--json", str(out)])
    assert code == 1  # one configuration failed, the other still ran
    report = json.loads(out.read_text())
    bad, good = report["results"]
    assert bad["status"] == "error" and "nope" in bad["error"]
    assert good["status"] == "ok" and good["batch_size"] == 2 and good["bases_per_second"] > 0
    assert good["peak_memory_gib"] is None  # CPU: no CUDA allocator figure
    assert "tiny" in capsys.readouterr().out


def test_target_note_says_by_how_much():
    hit = BenchResult("paper-7m", 2**20, 1, True, "bf16-mixed", parameters=7_000_000,
                      bases_per_second=8e5, peak_memory_gib=30.0)
    note = target_note([hit])
    assert "30.0 GiB (target < 40: met)" in note and "missed by 20%" in note
    oom = BenchResult("paper-7m", 2**20, 1, True, "bf16-mixed", status="oom", error="CUDA OOM")
    assert "failed (oom" in target_note([oom])
