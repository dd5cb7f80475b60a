"""Context parallelism's ops: one sequence split along its length over a process group.

Every rank of a ``ContextGroup`` holds one segment of the same sequences (rank 0 the first).

- ``context_parallel_scan``: the selective scan of the whole sequence, each rank computing its
  segment. Pass 1 runs the segment from a zero state for its end state b; with the segment's
  log-decay log P = A * sum(dt) that is the segment's affine map h_out = P h_in + b. The pairs
  are all-gathered and combined (``carry.combine_carries``) into every rank's true start
  state, and pass 2 reruns the segment from it: the output and end state are then exactly the
  one-process scan's, computed by the same op (see docs/kernels.md for why a rerun and not a
  correction term). Backward: pass 2's backward gives each rank d(start state) as its own
  outputs see it; ``_CarryExchange`` all-gathers these and runs the reverse combination, which
  hands each rank's pair the gradient of the states after it; pass 1's backward and the
  log-decay carry that into the segment's inputs. Both passes and both exchanges run on all
  ranks at once: nothing waits in a chain along the ranks.
- ``context_parallel_conv1d``: the causal depthwise convolution, with the last width-1 inputs
  of the previous rank (the halo) as its initial state; the halo's gradient goes back to the
  rank it came from.
- ``context_sum``: a differentiable sum over the group (mean pooling of a split sequence);
  ``gather_segments`` and ``broadcast_from`` (inference: the whole window's hidden states, the
  last rank's end state).
- ``ContextGroup`` / ``context_groups``: which ranks share a sequence (world = data-parallel
  replicas x context-parallel ranks, consecutive ranks in one group).

The exchanges are all-gathers of small tensors ((batch, dim, N) pairs, (batch, dim, width-1)
halos), the same collective on every rank in the same order, so gloo (CPU) and NCCL (GPU)
both run them and no rank pattern can deadlock. Autograd replays them in reverse layer order
on every rank, including under activation checkpointing (the recomputed forward repeats its
exchanges on every rank alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mambadna.kernels.context_parallel.carry import (
    combine_carries,
    combine_carry_grads,
    segment_log_decay,
)
from mambadna.kernels.conv1d import causal_conv1d
from mambadna.kernels.selective_scan import selective_scan


@dataclass(frozen=True)
class ContextGroup:
    """The ranks that split one sequence: ``group`` (None: the default group), this process's
    ``rank`` in it (its segment's index) and its ``size``; ``replica`` / ``replicas``: which
    data-parallel copy the group is, and how many there are."""

    group: Any
    rank: int
    size: int
    replica: int = 0
    replicas: int = 1

    @classmethod
    def single(cls) -> ContextGroup:
        """One rank holding the whole sequence (no communication)."""
        return cls(None, 0, 1)

    @property
    def first(self) -> bool:
        return self.rank == 0

    @property
    def last(self) -> bool:
        return self.rank == self.size - 1

    def bounds(self, length: int) -> tuple[int, int]:
        """[start, stop) of this rank's segment of a sequence of ``length`` positions (segments
        differ by at most one position)."""
        return length * self.rank // self.size, length * (self.rank + 1) // self.size


def context_groups(size: int) -> ContextGroup:
    """Split the initialised default process group into groups of ``size`` consecutive ranks
    (every rank must call this, in the same order as its other collectives); returns this
    process's group. Consecutive ranks share a node first, so the exchanges stay on NVLink."""
    if not (dist.is_available() and dist.is_initialized()):
        if size == 1:
            return ContextGroup.single()
        raise RuntimeError(f"context parallelism over {size} ranks needs an initialised "
                           f"torch.distributed process group (launch with torchrun)")
    world, rank = dist.get_world_size(), dist.get_rank()
    if size < 1 or world % size:
        raise ValueError(f"context-parallel size {size} does not divide the world size {world}")
    mine = None
    for first in range(0, world, size):
        ranks = list(range(first, first + size))
        group = dist.new_group(ranks) if size > 1 else None
        if rank in ranks:
            mine = group
    return ContextGroup(mine, rank % size, size, rank // size, world // size)


def _gather(tensor: torch.Tensor, context: ContextGroup) -> list[torch.Tensor]:
    """The tensor of every rank of the group, in rank order (same shape on every rank)."""
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(context.size)]
    dist.all_gather(parts, tensor, group=context.group)
    return parts


class _CarryExchange(torch.autograd.Function):
    """(log P, b) of this rank's segment -> its true start state; backward: the reverse pass."""

    @staticmethod
    def forward(ctx, log_decay, final, context):
        log_decays = torch.stack(_gather(log_decay, context))  # (R, batch, dim, N)
        states = combine_carries(log_decays, torch.stack(_gather(final, context)))
        ctx.save_for_backward(log_decays, states)
        ctx.context = context
        return states[context.rank].clone()

    @staticmethod
    def backward(ctx, grad):
        log_decays, states = ctx.saved_tensors
        context = ctx.context
        grads = torch.stack(_gather(grad, context))
        d_log_decay, d_final = combine_carry_grads(log_decays, states, grads)
        return d_log_decay[context.rank], d_final[context.rank], None


class _Halo(torch.autograd.Function):
    """The previous rank's last inputs (zeros on rank 0); backward sends their gradient back."""

    @staticmethod
    def forward(ctx, tail, context):
        ctx.context = context
        if context.first:
            _gather(tail, context)  # every rank takes part in the collective
            return torch.zeros_like(tail)
        return _gather(tail, context)[context.rank - 1]

    @staticmethod
    def backward(ctx, grad):
        context = ctx.context
        parts = _gather(grad, context)
        return (torch.zeros_like(grad) if context.last else parts[context.rank + 1]), None


class _Sum(torch.autograd.Function):
    """The sum over the group's ranks, on every rank; backward: the sum of the gradients (each
    rank's input reaches every rank's copy of the sum)."""

    @staticmethod
    def forward(ctx, tensor, context):
        ctx.context = context
        total = tensor.clone().contiguous()
        dist.all_reduce(total, group=context.group)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone().contiguous()
        dist.all_reduce(total, group=ctx.context.group)
        return total, None


def context_sum(tensor: torch.Tensor, context: ContextGroup) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks of ``context``, on every rank, differentiable (for
    what reads the whole sequence: mean pooling, the whole loss). A loss computed alike on
    every rank from the sum gets every gradient ``context.size`` times over the ranks, as a
    loss of the whole sequence that each rank sees once; data-parallel averaging over all
    ranks then gives each replica's gradient exactly once."""
    if not isinstance(context, ContextGroup):
        raise TypeError(f"context_sum: context must be a ContextGroup, got "
                        f"{type(context).__name__}")
    if context.size == 1:
        return tensor
    return _Sum.apply(tensor, context)


def gather_segments(tensor: torch.Tensor, context: ContextGroup, length: int,
                    dim: int = 1) -> torch.Tensor:
    """Every rank's segment of a sequence of ``length`` positions, joined along ``dim`` on
    every rank: the whole sequence (no gradient; for inference, where what reads the hidden
    states of the whole window, a pooling, runs on one rank's copy)."""
    if context.size == 1:
        return tensor
    dim = dim % tensor.dim()
    widest = -(-length // context.size)  # segments differ by at most one position
    pad = [0, 0] * (tensor.dim() - 1 - dim) + [0, widest - tensor.shape[dim]]
    parts = _gather(torch.nn.functional.pad(tensor, pad), context)
    pieces = [part.narrow(dim, 0, hi - lo) for part, (lo, hi) in
              zip(parts, (ContextGroup(None, r, context.size).bounds(length)
                          for r in range(context.size)))]
    return torch.cat(pieces, dim=dim)


def broadcast_from(tensor: torch.Tensor, context: ContextGroup, rank: int) -> torch.Tensor:
    """``tensor`` of group rank ``rank`` on every rank of the group (a new tensor; no
    gradient): the last rank's end state, which the next piece of a stream starts from."""
    if context.size == 1:
        return tensor
    out = tensor.detach().clone().contiguous()
    source = rank if context.group is None else dist.get_global_rank(context.group, rank)
    dist.broadcast(out, src=source, group=context.group)
    return out


def _check_context(context, initial_state, op: str) -> None:
    if not isinstance(context, ContextGroup):
        raise TypeError(f"{op}: context must be a ContextGroup, got {type(context).__name__}")
    if initial_state is not None and not context.first:
        raise ValueError(f"{op}: initial_state is the state before the whole sequence and "
                         f"belongs to rank 0; rank {context.rank} must pass None")


def context_parallel_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, *, context: ContextGroup, backend="auto",
    config=None,
):
    """``selective_scan`` of a sequence split over ``context``: the arguments are this rank's
    segment (u, delta, z: (batch, dim, L_rank); B, C: (batch[, groups], N, L_rank)); A, D and
    delta_bias are the same on every rank. ``initial_state`` (rank 0 only) is the state before
    the sequence. Returns this rank's part of the output [, the state after its segment: on the
    last rank, the sequence's final state]. Values and gradients equal the one-process scan's;
    every rank of the group must call it (it communicates).
    """
    _check_context(context, initial_state, "context_parallel_scan")
    scan = dict(delta_bias=delta_bias, delta_softplus=delta_softplus, backend=backend,
                config=config)
    if context.size == 1:
        return selective_scan(u, delta, A, B, C, D, z, initial_state=initial_state,
                              return_final_state=return_final_state, **scan)
    # Pass 1: the segment's end state from a zero start (D and z do not touch the state).
    _, final = selective_scan(u, delta, A, B, C, return_final_state=True, **scan)
    log_decay = segment_log_decay(delta, A, delta_bias, delta_softplus)
    if initial_state is not None:  # rank 0 folds the sequence's initial state into its pair
        final = final + torch.exp(log_decay) * initial_state.to(final.dtype)
    state_in = _CarryExchange.apply(log_decay, final, context)
    if initial_state is not None:
        state_in = state_in + initial_state.to(state_in.dtype)  # rank 0's is zero: h_in = h0
    # Pass 2: the segment from its true start state.
    return selective_scan(u, delta, A, B, C, D, z, initial_state=state_in,
                          return_final_state=return_final_state, **scan)


def context_parallel_conv1d(
    x, weight, bias=None, initial_state=None, return_final_state=False, activation=None, *,
    context: ContextGroup,
):
    """``causal_conv1d`` of a sequence split over ``context``: x (batch, dim, L_rank) is this
    rank's segment, with L_rank >= width - 1; ``initial_state`` (rank 0 only) the inputs
    before the sequence. Returns this rank's output [, the state after its segment]."""
    _check_context(context, initial_state, "context_parallel_conv1d")
    width = weight.shape[1] if isinstance(weight, torch.Tensor) and weight.dim() == 2 else 1
    if context.size == 1 or width == 1:
        return causal_conv1d(x, weight, bias, initial_state, return_final_state, activation)
    if not (isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[-1] >= width - 1):
        raise ValueError(f"context_parallel_conv1d: every rank's segment needs at least "
                         f"width-1 = {width - 1} positions, got x of shape "
                         f"{tuple(getattr(x, 'shape', ()))} on rank {context.rank}")
    halo = _Halo.apply(x[..., x.shape[-1] - (width - 1):], context)
    if initial_state is not None:
        halo = halo + initial_state.to(halo.dtype)
    return causal_conv1d(x, weight, bias, halo, return_final_state, activation)
