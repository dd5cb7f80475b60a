"""`mambadna bench --stages forward`: the model's inference forward, timed on the CPU."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mambadna.cli import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_forward_stage_reports_bases_per_second(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--device", "cpu", "--preset", "tiny", "--window", "128",
            "--batch-size", "2", "--stages", "forward", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "forward" in result.output
    forward = json.loads(out.read_text())["forward"]
    assert forward["window"] == 128 and forward["batch_size"] == 2
    assert forward["bases_per_s"] == pytest.approx(256 / forward["seconds"])
    assert "graph_bases_per_s" not in forward  # CUDA only
