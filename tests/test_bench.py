"""`mambadna bench`: a tiny CPU run produces its table and a JSON report with sane numbers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mambadna.bench import BenchConfig, write_random_fasta
from mambadna.cli import cli
from mambadna.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_smoke_run_writes_a_report(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--device", "cpu", "--preset", "tiny", "--window", "256",
            "--batch-size", "2", "--tokenize-mb", "0.5", "--train-seq-len", "128",
            "--train-batch-size", "2", "--train-steps", "2", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "tokenize" in result.output and "bases/s" in result.output
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["preset"] == "tiny"
    assert report["precision"] == "fp32" and report["parameters"] > 100_000
    tokenize, embed, train = report["tokenize"], report["embed"], report["train"]
    assert tokenize["mb_per_s"] > 0 and tokenize["megabytes"] == pytest.approx(0.5, rel=0.05)
    # 2 windows per record on CPU by default, one record per batch row.
    assert embed["bases"] == embed["windows"] * 256 == 2 * 2 * 256
    assert embed["bases_per_s"] > 0 and embed["peak_memory_mb"] > 0
    assert train["tokens_per_s"] > 0 and train["peak_memory_mb"] > 0
    assert train["seq_len"] == 128 and train["steps"] == 2


def test_generated_fasta_has_the_asked_lengths(tmp_path):
    from mambadna.io import read_records

    path = tmp_path / "r.fa"
    write_random_fasta(path, [7, 80, 161, 4_000_123], seed=1, width=80)
    records = list(read_records(path))
    assert [(r.name, len(r)) for r in records] == [
        ("chr1", 7), ("chr2", 80), ("chr3", 161), ("chr4", 4_000_123)]
    assert set(records[3].sequence) == set(b"ACGT")
    assert path.read_bytes().count(b"\n\n") == 0


def test_bench_rejects_unknown_stages():
    with pytest.raises(ConfigError, match="unknown or no bench stage"):
        BenchConfig(stages=("tokenize", "fly"))


def test_scan_stage_times_each_shape_and_its_inputs_are_the_models(tmp_path):
    import torch

    from mambadna.bench import scan_inputs
    from mambadna.kernels import selective_scan

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--device", "cpu", "--preset", "tiny",
                                      "--stages", "scan", "--scan-shapes", "2x32x300,1x8x5",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["scan"]
    assert [(r["batch"], r["channels"], r["length"]) for r in rows] == [(2, 32, 300), (1, 8, 5)]
    for row in rows:
        assert 0 < row["forward_ms"] < row["forward_backward_ms"], row
        assert "graph_forward_ms" not in row  # CUDA only
    assert result.output.count("\nscan ") == 2 and "fwd+bwd" in result.output
    # the timed inputs are the model's call: finite outputs, decays in (0, 1)
    x = scan_inputs(2, 32, 300, "cpu", torch.float32)
    assert x["delta_softplus"] and x["z"] is not None and x["A"].max() < 0
    assert torch.isfinite(selective_scan(**x)).all()


@pytest.mark.parametrize("text", ["2x64", "1x0x8", "axbxc", "1x2x3,"])
def test_bad_scan_shapes_are_a_clear_error(text):
    result = CliRunner().invoke(cli, ["bench", "--stages", "scan", "--scan-shapes", text])
    assert result.exit_code == 1
    assert "BATCHxCHANNELSxLENGTH" in result.output and "Traceback" not in result.output
