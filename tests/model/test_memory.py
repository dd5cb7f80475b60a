"""The GPU memory check (issue 19): the estimate of what a model needs (weights, gradients,
AdamW state, activations) against the tensors a real model keeps, and the decision and its
advice for a given free memory, on CPU with real configs; the CUDA branch on a GPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mambadna.errors import ConfigError
from mambadna.model import MambaDNA, ModelConfig
from mambadna.model.memory import GIB, check_device_fits, estimate_memory
from mambadna.model.network import parameter_count

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _saved_bytes(model: MambaDNA, tokens: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens)
    return sum(storages.values())


def test_the_estimate_is_a_floor_of_what_a_real_model_keeps():
    cfg = ModelConfig.from_preset("tiny")
    model = MambaDNA(cfg)
    x = torch.randint(5, 9, (2, 512))
    kept = _saved_bytes(model, x)
    est = estimate_memory(cfg, tokens=x.numel(), training=True)
    assert 0.7 * kept < est.activations <= kept  # the CPU path keeps ~1.1x more
    assert est.parameters == model.num_parameters() * 4 == parameter_count(cfg) * 4
    assert est.gradients == est.parameters and est.optimizer == 2 * est.parameters
    ckpt = estimate_memory(cfg, tokens=x.numel(), training=True, checkpointing=True)
    infer = estimate_memory(cfg, tokens=x.numel(), training=False)
    assert infer.total < ckpt.total < est.total
    assert infer.gradients == infer.optimizer == 0
    half = estimate_memory(cfg, tokens=x.numel(), training=True, bf16=True)
    assert half.activations < est.activations and half.parameters == est.parameters
    fsdp = estimate_memory(cfg, tokens=x.numel(), training=True, shards=4)
    assert fsdp.fixed == pytest.approx(est.fixed / 4, rel=1e-3)


def test_a_batch_too_large_is_refused_with_the_largest_that_fits():
    cfg = ModelConfig.from_preset("paper-7m")
    tokens = 8 * (1 << 17)
    est = estimate_memory(cfg, tokens=tokens, training=True, bf16=True)
    check_device_fits(cfg, "cuda:0", tokens=tokens, training=True, bf16=True, free=est.total)
    free = est.total // 2  # checkpointing needs ~0.41 of it
    with pytest.raises(ConfigError, match=r"needs at least .* GiB on cuda:0 for a training "
                                          r"step \(weights .* AdamW state") as info:
        check_device_fits(cfg, "cuda:0", tokens=tokens, training=True, bf16=True, free=free)
    fix = info.value.fix
    most = int(fix.split("up to ")[1].split(" tokens")[0].replace(",", ""))
    fits = estimate_memory(cfg, tokens=most, training=True, bf16=True).total
    over = estimate_memory(cfg, tokens=most + 1, training=True, bf16=True).total
    assert fits <= free < over
    assert "--gradient-checkpointing on" in fix  # which would fit this batch


def test_weights_too_large_are_refused_with_the_sizes_that_fit():
    cfg = dataclasses.replace(ModelConfig.from_preset("paper-7m"), d_model=8192, dt_rank=512)
    free = 4 * GIB
    with pytest.raises(ConfigError, match="for inference") as info:
        check_device_fits(cfg, "cuda", tokens=1024, training=False, free=free)
    fix = info.value.fix
    d_model = int(fix.split("d_model up to ")[1].split(" ")[0])
    smaller = dataclasses.replace(cfg, d_model=d_model, dt_rank=-(-d_model // 16))
    assert estimate_memory(smaller, tokens=1, training=False).total <= free
    bigger = dataclasses.replace(cfg, d_model=d_model + 1, dt_rank=-(-(d_model + 1) // 16))
    assert estimate_memory(bigger, tokens=1, training=False).total > free
    with pytest.raises(ConfigError, match="training step") as info:
        check_device_fits(cfg, "cuda", tokens=1024, training=True, free=free)
    assert "--strategy fsdp" in info.value.fix


def test_weights_already_on_the_device_are_not_counted_twice():
    cfg = ModelConfig.from_preset("paper-1.4m")
    est = estimate_memory(cfg, tokens=4096, training=False)
    check_device_fits(cfg, "cuda", tokens=4096, training=False, resident=True,
                      free=est.activations)
    with pytest.raises(ConfigError):
        check_device_fits(cfg, "cuda", tokens=4096, training=False, free=est.activations)


def test_off_cuda_nothing_is_checked_without_a_figure():
    cfg = dataclasses.replace(ModelConfig.from_preset("tiny"), d_model=1 << 20)
    check_device_fits(cfg, "cpu", tokens=1 << 30, training=True)  # host: see check_fits


@pytest.mark.gpu
@needs_gpu
def test_the_cuda_branch_reads_the_free_memory():
    free, _ = torch.cuda.mem_get_info()
    check_device_fits(ModelConfig.from_preset("tiny"), "cuda", tokens=4096, training=True)
    huge = dataclasses.replace(ModelConfig.from_preset("paper-7m"), n_layer=16 * 4096)
    with pytest.raises(ConfigError, match=f"{free / GIB:,.2f} GiB is free"):
        check_device_fits(huge, "cuda", tokens=4096, training=True)


@pytest.mark.gpu
@needs_gpu
def test_pretraining_a_model_too_large_for_the_gpu_fails_before_the_first_step(tmp_path,
                                                                              random_dna):
    from mambadna.train import PretrainConfig, pretrain

    genome = tmp_path / "g.fa"
    genome.write_text(f">chr1\n{random_dna(20_000)}\n")
    free, _ = torch.cuda.mem_get_info()
    d_model = int((free / 16 / 8) ** 0.5 / 2) * 2  # weights x 16 bytes (training) > free
    with pytest.raises(ConfigError, match="for a training step") as info:
        pretrain(PretrainConfig(genomes=[str(genome)], out_dir=str(tmp_path / "run"),
                                preset="tiny", model={"d_model": d_model, "n_layer": 4},
                                seq_len=1024, batch_size=1, max_steps=1, num_workers=0))
    assert "what fits" in info.value.fix
    assert not (tmp_path / "run").exists()
