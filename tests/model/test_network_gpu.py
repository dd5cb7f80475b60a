"""The model on a CUDA GPU (selective scan through Triton): same outputs as on CPU, streaming."""

from __future__ import annotations

import pytest
import torch

from mambadna.alphabet import PAD, A, T
from mambadna.model import MambaDNA, ModelConfig, lm_loss

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def build(**overrides):
    torch.manual_seed(0)
    cfg = dict(d_model=64, n_layer=3)
    cfg.update(overrides)
    return MambaDNA(ModelConfig(**cfg)).eval()


def tokens(batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(A, T + 1, (batch, length), generator=g)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cuda_matches_cpu(bidirectional):
    model = build(bidirectional=bidirectional)
    x = tokens(2, 1000)
    x[1, 700:] = PAD
    with torch.no_grad():
        cpu = model.hidden_states(x)
        gpu = model.cuda().hidden_states(x.cuda()).cpu()
    assert (cpu - gpu).abs().max().item() < 1e-4


def test_cuda_streaming_and_step_are_exact():
    model = build().cuda()
    x = tokens(2, 700, seed=1).cuda()
    with torch.no_grad():
        full = model(x)
        state, pieces = None, []
        for lo, hi in ((0, 1), (1, 300), (300, 333), (333, 700)):
            logits, state = model(x[:, lo:hi], state=state, return_state=True)
            pieces.append(logits)
        assert (torch.cat(pieces, 1) - full).abs().max().item() < 1e-4
        step_logits, _ = model.step(x[:, 700 - 1], model(x[:, :699], return_state=True)[1])
        assert (step_logits - full[:, 699]).abs().max().item() < 1e-4


def test_cuda_bf16_training_step_with_checkpointing():
    model = build(gradient_checkpointing=True).cuda().train()
    x = tokens(2, 4096, seed=2).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = lm_loss(model(x), x)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
