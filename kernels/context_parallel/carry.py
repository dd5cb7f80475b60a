"""The carry combination of context parallelism, on one process (the math; no communication).

A rank's segment maps the state before it to the state after it by an affine map, elementwise
per (batch, channel, state)::

    h_out = P * h_in + b        P = exp(A * sum_seg dt)   (the product of the segment's decays)
                                b = the segment's end state from a zero start

Ranks r = 0..R-1 hold consecutive segments; their start states are the exclusive prefix of
the maps, h_in[0] = 0 (an initial state is folded into rank 0's b) and
h_in[r+1] = P[r] * h_in[r] + b[r]. The pairs compose associatively,
(P1, b1) then (P2, b2) = (P2 P1, P2 b1 + b2), so the prefix could equally be a log-step scan;
with the pairs of all ranks gathered on every rank (R is small) the linear walk is cheapest.

The reverse pass: with g[r] = dLoss/dh_in[r] as rank r's own outputs see it (through its
segment only), the total gradient of h_in[r] is G[r] = g[r] + P[r] * G[r+1], G[R] = 0, and
rank r's pair receives db[r] = G[r+1] and d(log P)[r] = G[r+1] * P[r] * h_in[r].
"""

from __future__ import annotations

import torch


def segment_log_decay(delta, A, delta_bias=None, delta_softplus=False) -> torch.Tensor:
    """log P of a segment: A * sum_t dt, (batch, dim, N) fp32, differentiable.

    delta: (batch, dim, L); A: (dim, N); delta_bias: (dim,) or None; dt as the scan's
    (softplus(delta + delta_bias) with ``delta_softplus``).
    """
    dtype = torch.float64 if torch.float64 in (delta.dtype, A.dtype) else torch.float32
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)
    return dt.sum(-1)[..., None] * A.to(dtype)  # (batch, dim, N)


def combine_carries(log_decay: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """Start states of every segment from their pairs: log_decay, final (R, ...) -> (R, ...).

    h_in[0] = 0, h_in[r+1] = exp(log_decay[r]) * h_in[r] + final[r].
    """
    states = [torch.zeros_like(final[0])]
    for r in range(final.shape[0] - 1):
        states.append(torch.exp(log_decay[r]) * states[-1] + final[r])
    return torch.stack(states)


def combine_carry_grads(log_decay: torch.Tensor, states: torch.Tensor,
                        grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reverse pass: gradients of every segment's pair from its start state's local
    gradient. log_decay, states (from ``combine_carries``), grads (R, ...) -> (d log_decay,
    d final), both (R, ...).

    G[R] = 0, G[r] = grads[r] + P[r] * G[r+1]; d final[r] = G[r+1],
    d log_decay[r] = G[r+1] * P[r] * states[r].
    """
    after = torch.zeros_like(grads[0])  # G[r+1], walking r from the last rank down
    d_final = []
    for r in reversed(range(grads.shape[0])):
        d_final.append(after)
        after = grads[r] + torch.exp(log_decay[r]) * after
    d_final = torch.stack(d_final[::-1])
    return d_final * torch.exp(log_decay) * states, d_final
