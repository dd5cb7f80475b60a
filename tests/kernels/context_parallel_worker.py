"""One rank of the multi-process context-parallel tests (run by test_context_parallel.py).

    python context_parallel_worker.py CASE RANK WORLD INIT_FILE

Every rank builds the same inputs (same seed), computes the one-process result itself, then
its segment through the context-parallel path over gloo, and compares its part of the values
and gradients (parameter gradients summed over the ranks). A mismatch raises: exit status 1.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from mambadna.kernels import causal_conv1d, selective_scan
from mambadna.kernels.context_parallel import (
    context_groups,
    context_parallel_conv1d,
    context_parallel_scan,
)
from mambadna.model import MambaDNA, ModelConfig, lm_loss, segment_lm_loss


def close(name, got, want, rtol, atol):
    if not torch.allclose(got, want, rtol=rtol, atol=atol):
        err = (got - want).abs().max().item()
        raise AssertionError(f"rank {dist.get_rank()}: {name} differs by {err:.3g} "
                             f"(scale {want.abs().max().item():.3g})")


def summed(grad, context):
    grad = grad.clone()
    dist.all_reduce(grad, group=context.group)
    return grad


def op_case(context, length, backend="loop"):
    """The scan and the conv alone, with initial states and final states, every input's
    gradient, against the per-position definition in fp64: split in fp64 with the definition
    ("loop"), or in fp32 with the Triton kernels ("triton", under TRITON_INTERPRET=1)."""
    g = torch.Generator().manual_seed(0)
    batch, dim, n, width = 2, 6, 4, 4
    f64 = dict(dtype=torch.float64)
    u, delta, z = (torch.randn(batch, dim, length, generator=g, **f64) for _ in range(3))
    A = -torch.rand(dim, n, generator=g, **f64) * 3 - 0.1
    B, C = (torch.randn(batch, n, length, generator=g, **f64) for _ in range(2))
    D, bias = torch.randn(dim, generator=g, **f64), torch.randn(dim, generator=g, **f64) * 0.3
    h0 = torch.randn(batch, dim, n, generator=g, **f64)
    w_out = torch.randn(batch, dim, length, generator=g, **f64)
    w_final = torch.randn(batch, dim, n, generator=g, **f64)
    x = torch.randn(batch, dim, length, generator=g, **f64)
    weight, cbias = torch.randn(dim, width, generator=g, **f64), torch.randn(dim, generator=g,
                                                                             **f64)
    c0 = torch.randn(batch, dim, width - 1, generator=g, **f64)
    w_conv = torch.randn(batch, dim, length, generator=g, **f64)
    w_cfinal = torch.randn(batch, dim, width - 1, generator=g, **f64)
    leaves = [t.requires_grad_() for t in (u, delta, z, A, B, C, D, bias, h0, x, weight, cbias,
                                           c0)]
    dtype = torch.float64 if backend == "loop" else torch.float32
    tol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-4, 1e-5)
    split = [t.detach().to(dtype).requires_grad_() for t in leaves]

    def loss_of(out, final, cout, cfinal, lo, hi, last):
        loss = (out * w_out[..., lo:hi]).sum() + (cout * w_conv[..., lo:hi]).sum()
        if last:
            loss = loss + (final * w_final).sum() + (cfinal * w_cfinal).sum()
        return loss

    out, final = selective_scan(u, delta, A, B, C, D, z, bias, True, h0, True, backend="loop")
    cout, cfinal = causal_conv1d(x, weight, cbias, c0, True, "silu")
    want = torch.autograd.grad(loss_of(out, final, cout, cfinal, 0, length, True), leaves)
    want_out = out.detach()

    lo, hi = context.bounds(length)
    su, sdelta, sz, sA, sB, sC, sD, sbias, sh0, sx, sweight, scbias, sc0 = split
    seg = [t[..., lo:hi] for t in (su, sdelta, sz, sB, sC, sx)]
    first = context.first
    out_r, final_r = context_parallel_scan(
        seg[0], seg[1], sA, seg[3], seg[4], sD, seg[2], sbias, True, sh0 if first else None,
        True, context=context, backend=backend)
    cout_r, cfinal_r = context_parallel_conv1d(seg[5], sweight, scbias, sc0 if first else None,
                                               True, "silu", context=context)
    got = torch.autograd.grad(loss_of(out_r, final_r, cout_r, cfinal_r, lo, hi, context.last),
                              split, allow_unused=True)  # other ranks: no initial states
    got = [torch.zeros_like(t) if g is None else g for g, t in zip(got, split)]
    close("scan output", out_r.detach().double(), want_out[..., lo:hi], *tol)
    if context.last:
        close("final state", final_r.detach().double(), final.detach(), *tol)
        close("conv final state", cfinal_r.detach().double(), cfinal.detach(), *tol)
    close("conv output", cout_r.detach().double(), cout.detach()[..., lo:hi], *tol)
    names = ("u", "delta", "z", "A", "B", "C", "D", "delta_bias", "initial_state", "x",
             "conv weight", "conv bias", "conv initial state")
    for name, got_g, want_g in zip(names, got, want):
        # each rank's gradients are its segment's part: summed over ranks, the whole gradient
        close(f"d {name}", summed(got_g, context).double(), want_g, 10 * tol[0], tol[1])


def model_case(context, length, checkpointing):
    """The whole model, fp32: logits, the loss, the gradient of every parameter and of the
    embedded input, against one process."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_layer=2, d_state=4, gradient_checkpointing=checkpointing)
    model = MambaDNA(cfg)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(5, 10, (2, length), generator=g)  # A, C, G, T and N

    def run(segment, ctx):
        seen = {}

        def keep(module, args, output):
            output.retain_grad()
            seen["embedded"] = output

        handle = model.embedding.register_forward_hook(keep)
        model.zero_grad(set_to_none=True)
        logits = model(segment, context=ctx)
        handle.remove()
        return logits, seen

    logits, seen = run(tokens, None)
    loss = lm_loss(logits, tokens)
    loss.backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters()}
    want_embedded = seen["embedded"].grad.clone()

    lo, hi = context.bounds(length)
    logits_r, seen_r = run(tokens[:, lo:hi], context)
    share, _, _ = segment_lm_loss(logits_r, tokens, context)
    share.backward()
    close("logits", logits_r.detach(), logits.detach()[:, lo:hi], 1e-4, 1e-5)
    close("loss", summed(share.detach(), context), loss.detach(), 1e-5, 1e-6)
    close("d embedded input", seen_r["embedded"].grad, want_embedded[:, lo:hi], 1e-4, 1e-6)
    for name, p in model.named_parameters():
        close(f"d {name}", summed(p.grad, context), want[name], 1e-4, 1e-6)


def classify_case(context, length, pooling):
    """The classifier (pooled over every segment): logits and every parameter's gradient; the
    loss is the whole window's on every rank, so summed gradients are size x the one-process
    ones (data-parallel averaging over all ranks divides that out)."""
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig(d_model=16, n_layer=2, d_state=4, num_labels=3,
                                 pooling=pooling))
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(5, 10, (3, length), generator=g)
    labels = torch.tensor([0, 2, 1])
    logits = model.classify_logits(tokens)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    lo, hi = context.bounds(length)
    logits_r = model.classify_logits(tokens[:, lo:hi], context=context)
    torch.nn.functional.cross_entropy(logits_r, labels).backward()
    close(f"{pooling} logits", logits_r.detach(), logits.detach(), 1e-4, 1e-6)
    for name, p in model.named_parameters():
        close(f"{pooling} d {name}", summed(p.grad, context) / context.size, want[name],
              1e-4, 1e-6)


def main() -> None:
    case, rank, world, init = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        context = context_groups(world)
        if case == "op":
            op_case(context, 24)
            op_case(context, 23)  # segments of unequal length
        elif case == "model":
            model_case(context, 32, checkpointing=False)
        elif case == "op-triton":  # run with TRITON_INTERPRET=1
            op_case(context, 37, backend="triton")
        elif case == "classify":
            classify_case(context, 28, "mean")
            classify_case(context, 28, "last")
        elif case == "model-checkpointing":
            model_case(context, 30, checkpointing=True)
        else:
            raise ValueError(case)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
