"""Training on CUDA: bf16-mixed, gradient checkpointing, FSDP on one GPU (``pytest -m gpu``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from mambadna.model import load_model
from mambadna.train import PretrainConfig, pretrain

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gpu") / "g.fa"
    path.write_text(">chr1\n" + "".join(rng.choice(list("ACGT"), 200_000)) + "\n")
    return path


@pytest.mark.parametrize("strategy", ["auto", "fsdp"])
def test_pretrain_on_one_gpu(genome, tmp_path, strategy):
    before = torch.get_float32_matmul_precision()
    run = pretrain(PretrainConfig(genomes=[str(genome)], out_dir=str(tmp_path / "run"),
                                  preset="tiny", seq_len=8192, batch_size=2, max_steps=4,
                                  val_every=2, val_windows=2, num_workers=1, devices=1,
                                  strategy=strategy, gradient_checkpointing="on",
                                  warmup_start=4096, warmup_stage=2))
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["resolved"]
    assert resolved["precision"] == "bf16-mixed" and resolved["gradient_checkpointing"]
    # the run's TF32 ends with it: later fp32 products of this process are exact again
    assert torch.get_float32_matmul_precision() == before
    assert np.isfinite(run.final["val_loss"]) and run.final["val_loss"] < 2.0
    model = load_model(run.model_dir, device="cuda")
    assert model.config.d_model == 64 and not model.config.gradient_checkpointing
