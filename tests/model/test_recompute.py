"""Recomputing x, z, the conv output and delta in the backward (mixer.Recompute) changes no
gradient, keeps a recipe, not the tensor, for what was registered, and frees it by reference
counting; the projections around them match matmul."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import mambadna
from mambadna.model.mixer import Recompute, channel_product, out_projection
from mambadna.model.network import lm_loss


def _grads(model, tokens, recompute: bool) -> dict:
    model.zero_grad(set_to_none=True)
    hidden = model.embedding(tokens).float()
    residual = None
    for layer in model.layers:
        hidden, residual, _, _ = layer(hidden, residual, recompute=recompute)
    logits = model.lm_logits(model.norm_f(hidden, residual))
    lm_loss(logits, tokens).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_recomputed_backward_gives_the_same_gradients():
    cfg = mambadna.ModelConfig.from_preset("tiny", n_layer=2)
    torch.manual_seed(0)
    model = mambadna.MambaDNA(cfg).train()
    tokens = torch.randint(0, 4, (2, 70), generator=torch.Generator().manual_seed(3))
    kept, rebuilt = _grads(model, tokens, False), _grads(model, tokens, True)
    for name, grad in kept.items():
        torch.testing.assert_close(rebuilt[name], grad, rtol=0, atol=0, msg=name)


def test_recompute_keeps_a_recipe_for_a_registered_tensor():
    w = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(3, 4)
    calls = []

    def make():
        calls.append(1)
        return torch.matmul(w.detach(), x)

    recompute = Recompute()
    with recompute:
        y = recompute.add(torch.matmul(w, x), make)
        loss = torch.sin(y).sum()  # sin saves y: kept as the recipe
    assert calls == []  # nothing rebuilt before the backward
    loss.backward()
    assert calls == [1]
    torch.testing.assert_close(w.grad, torch.cos(torch.matmul(w.detach(), x)) @ x.t())


def test_a_rebuilt_tensor_is_freed_once_the_backward_has_read_it():
    w = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(3, 4)
    rebuilt = []

    def make():
        rebuilt.append(weakref.ref(value := torch.matmul(w.detach(), x)))
        return value

    recompute = Recompute()  # still referenced below: it must not hold the recipe
    with recompute:
        y = recompute.add(torch.matmul(w, x), make)
        loss = torch.sin(y).sum()
    del y
    loss.backward()
    assert len(rebuilt) == 1 and rebuilt[0]() is None


def test_a_training_step_leaves_no_tensor_to_the_cycle_collector():
    """With ``Recompute`` on, every tensor of a training step is freed by reference counting
    once the backward has run and the loss is dropped. A reference cycle through the recipes
    once kept a whole step's activations (and the rebuilt tensors) until Python's cycle
    collector happened to run: on the GPU that was the backward's "transient" of 1.3-1.4x
    the activations."""
    cfg = mambadna.ModelConfig.from_preset("tiny", n_layer=2)
    torch.manual_seed(0)
    model = mambadna.MambaDNA(cfg).train()
    tokens = torch.randint(0, 4, (2, 70), generator=torch.Generator().manual_seed(3))
    lm_loss(model(tokens), tokens).backward()  # the first call's lazy imports
    gc.collect()
    gc.disable()
    try:
        loss = lm_loss(model(tokens), tokens)
        loss.backward()
        del loss
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        held = [tuple(o.shape) for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert held == []


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_the_projections_give_matmuls_values_and_gradients(autocast):
    """channel_product and out_projection (batched products that keep the (batch, channels,
    L) layout, no transposed copies) against torch.matmul of the same operands."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, 40, generator=gen)
    w_in, w_out = torch.randn(24, 16, generator=gen), torch.randn(8, 24, generator=gen)

    def run(product, project):
        leaves = [t.clone().requires_grad_() for t in (x, w_in, w_out)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = project(product(leaves[1], leaves[0]), leaves[2])
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.float(), [t.grad for t in leaves]

    ours = run(channel_product, out_projection)
    theirs = run(torch.matmul, lambda y, w: torch.matmul(y.transpose(1, 2), w.t()))
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[0], theirs[0], **tol)
    for mine, ref in zip(ours[1], theirs[1]):
        torch.testing.assert_close(mine, ref, **tol)
