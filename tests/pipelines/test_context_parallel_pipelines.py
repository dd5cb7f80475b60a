"""``embed`` / ``classify`` with ``--context-parallel``: every window split over the ranks of a
group (gloo processes on the CPU) gives the rows of one process, in window and stream mode,
and with 2 replicas x 2 ranks; misuse is a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import mambadna as md
from mambadna.cli import cli
from mambadna.errors import ConfigError
from mambadna.model import MambaDNA, ModelConfig
from mambadna.pipelines.classify import classify_on_devices
from mambadna.pipelines.embed import embed_on_devices, embed_run
from mambadna.pipelines.run import RunOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=2))
    return model.save_pretrained(tmp_path_factory.mktemp("cp-embed") / "model",
                                 training_info={"seq_len": 64})


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    torch.manual_seed(1)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=2, num_labels=3,
                                             pooling="mean"))
    return model.save_pretrained(tmp_path_factory.mktemp("cp-cls") / "model",
                                 labels=["ape", "bat", "cat"], training_info={"seq_len": 64})


@pytest.fixture
def genome(tmp_path, write_fasta, random_dna):
    """Records of 200, 64, 150 and 20 bases; chr2 holds a run of N."""
    chr2 = random_dna(30, seed=2) + "N" * 20 + random_dna(14, seed=3)
    records = {"chr1": random_dna(200, seed=1), "chr2": chr2, "chr3": random_dna(150, seed=4),
               "tiny": random_dna(20, seed=5)}
    return write_fasta(tmp_path / "genome.fa", records)


def _same_embeddings(got, want):
    got, want = pq.read_table(got), pq.read_table(want)
    assert got.drop_columns("embedding").equals(want.drop_columns("embedding"))
    np.testing.assert_allclose(np.stack(got.column("embedding").to_numpy(False)),
                               np.stack(want.column("embedding").to_numpy(False)),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~20 s: 4 processes
def test_embed_windows_split_over_ranks_with_two_replicas(tmp_path, model_dir, genome):
    single = md.embed(model_dir, genome, tmp_path / "one.parquet", window=32, pool="max",
                      progress=False)
    result = embed_on_devices(
        model_dir, genome, tmp_path / "cp.parquet",
        RunOptions(window=32, devices=4, context_parallel=2, progress=False), pool="max",
        force=False, row_group_size=2, device_type="cpu", processes=True)
    _same_embeddings(result.out, single)
    meta = pq.read_schema(result.out).metadata
    assert b'"context_parallel": 2' in meta[b"mambadna"] and b'"devices": 4' in meta[b"mambadna"]


@pytest.mark.slow  # ~12 s: 2 processes
def test_embed_stream_carries_the_last_ranks_state(tmp_path, model_dir, genome):
    """Stream mode: each window starts from the state after the previous one, which the last
    rank computed; --pool last reads the state after the whole record so far."""
    single = md.embed(model_dir, genome, tmp_path / "one.parquet", window=24, pool="last",
                      stream=True, batch_size=2, progress=False)
    result = embed_on_devices(
        model_dir, genome, tmp_path / "cp.parquet",
        RunOptions(window=24, stream=True, batch_size=2, devices=2, context_parallel=2,
                   progress=False), pool="last", force=False, row_group_size=None,
        device_type="cpu", processes=True)
    _same_embeddings(result.out, single)


@pytest.mark.slow  # ~12 s: 2 processes
def test_classify_windows_split_over_ranks(tmp_path, classifier_dir, genome):
    single = md.classify(classifier_dir, genome, window=32, per_window=True, progress=False)
    result = classify_on_devices(
        classifier_dir, genome, RunOptions(window=32, devices=2, context_parallel=2,
                                           progress=False),
        per_window=True, device_type="cpu", processes=True)
    got = result.frame.drop(columns="record_index")
    pd.testing.assert_frame_equal(got[["record_id", "predicted_label"]],
                                  single[["record_id", "predicted_label"]])
    probs = [c for c in single.columns if c.startswith("prob_")]
    np.testing.assert_allclose(got[probs].to_numpy(float), single[probs].to_numpy(float),
                               rtol=1e-4, atol=1e-6)


def test_context_parallel_needs_devices_it_divides(tmp_path, model_dir, genome):
    with pytest.raises(ConfigError, match="positive divisor of --devices 3"):
        RunOptions(devices=3, context_parallel=2)
    with pytest.raises(ConfigError, match="needs --devices"):
        embed_run(model_dir, genome, tmp_path / "e.parquet",
                  options=RunOptions(context_parallel=2, progress=False))
    assert not (tmp_path / "e.parquet").exists()
    done = CliRunner().invoke(cli, ["embed", str(genome), "-o", str(tmp_path / "e.parquet"),
                                    "--model", str(model_dir), "--context-parallel", "2"])
    assert done.exit_code == 1 and "add --devices 2" in done.output
