"""The context-parallel benchmark (benchmarks/context_parallel.py): the efficiency column and
a CPU sweep through real torchrun launches (gloo)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from context_parallel import _efficiency, format_table, main  # benchmarks/context_parallel.py


def test_efficiency_is_against_one_gpu_at_the_same_length():
    rows = [{"context_parallel": 1, "seq_len": 8, "status": "ok", "bases_per_second": 100.0},
            {"context_parallel": 1, "seq_len": 16, "status": "oom", "error": "out of memory"},
            {"context_parallel": 2, "seq_len": 8, "status": "ok", "bases_per_second": 150.0},
            {"context_parallel": 2, "seq_len": 16, "status": "ok", "bases_per_second": 140.0}]
    _efficiency(rows)
    assert rows[0]["efficiency"] == 1.0 and rows[2]["efficiency"] == 0.75
    assert "efficiency" not in rows[3]  # one GPU did not train 16: nothing to compare with
    table = format_table(rows, {1: 8, 2: 16})
    assert "1 GPU: 8, 2 GPUs: 16" in table and "out of memory" in table


@pytest.mark.slow  # ~30 s: two torchrun launches
def test_cpu_sweep_launches_each_configuration(tmp_path, capsys):
    out = tmp_path / "cp.json"
    code = main(["--device", "cpu", "--preset", "tiny", "--start", "128", "--max-len", "128",
                 "--sizes", "1,2", "--steps", "1", "--warmup", "1", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert [(r["context_parallel"], r["status"]) for r in report["results"]] == \
        [(1, "ok"), (2, "ok")]
    assert report["longest_trainable"] == {"1": 128, "2": 128}
    assert all(r["bases_per_second"] > 0 for r in report["results"])
