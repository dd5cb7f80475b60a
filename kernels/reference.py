"""Selective scan in plain PyTorch: the ground truth and the CPU path.

Both functions take the arguments of the public ``mambadna.kernels.selective_scan`` (already
validated) and compute, for every (batch b, channel d, position t, state n)::

    dt[b,d,t]    = softplus(delta[b,d,t] + delta_bias[d])      (bias/softplus optional)
    x[b,d,n,t]   = exp(dt * A[d,n]) * x[b,d,n,t-1] + dt * B[b,n,t] * u[b,d,t]
    y[b,d,t]     = sum_n C[b,n,t] * x[b,d,n,t]  +  D[d] * u[b,d,t]
    out[b,d,t]   = y * silu(z[b,d,t])                         (gate optional)

with ``x[..., -1] = initial_state`` (zeros by default). With grouped B/C of shape
(batch, groups, N, L), channel d reads group d // (dim // groups).

- ``selective_scan_reference`` walks the positions one by one. It is the definition: slow, for
  tiny shapes and for checking everything else.
- ``selective_scan_chunked`` walks chunks of positions; inside a chunk the recurrence has a
  closed form (cumulative sums of log-decays), so one chunk costs a dozen tensor operations
  instead of a dozen per position. It is what the model runs on CPU, and it is differentiable by
  ordinary autograd.

Computation is in fp32 (fp64 when any input is fp64, for gradcheck); the output has u's dtype and
the final state is fp32 (fp64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Positions per chunk of the chunked scan; 16 keeps a chunk's (batch, dim, T, N) tensors in cache.
CHUNK_SIZE = 16

# Inside a chunk the closed form multiplies exp(+s/2) by exp(-s/2), where s is the chunk's total
# log-decay. Beyond these magnitudes of s, the factors could overflow; such chunks are walked
# position by position instead (same result, slower; happens only for very large dt * |A|).
_MAX_CHUNK_DECAY = {torch.float32: 120.0, torch.float64: 1200.0}


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """fp64 if any input is fp64 (gradcheck), fp32 otherwise (bf16/fp16 inputs are upcast)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state):
    """Upcast, apply bias/softplus, and view channels as (groups, channels per group).

    Returns u, dt: (batch, G, Dg, L); A: (G, Dg, N); B, C: (batch, G, 1, N, L);
    D: (G, Dg, 1) or None; x0: (batch, G, Dg, N).
    """
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    batch, dim, length = u.shape
    groups = 1 if B.dim() == 3 else B.shape[1]
    n_state = A.shape[1]
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    grouped = (batch, groups, dim // groups, length)
    u_ = u.to(dtype).reshape(grouped)
    dt = dt.reshape(grouped)
    A_ = A.to(dtype).reshape(groups, dim // groups, n_state)
    B_ = B.to(dtype).reshape(batch, groups, 1, n_state, length)
    C_ = C.to(dtype).reshape(batch, groups, 1, n_state, length)
    D_ = None if D is None else D.to(dtype).reshape(groups, dim // groups, 1)
    if initial_state is None:
        x0 = u_.new_zeros(batch, groups, dim // groups, n_state)
    else:
        x0 = initial_state.to(dtype).reshape(batch, groups, dim // groups, n_state)
    return u_, dt, A_, B_, C_, D_, x0


def _finish(y, u_, D_, z, out_dtype, shape):
    """Add the D skip, apply the SiLU(z) gate, restore (batch, dim, L) and the input dtype."""
    if D_ is not None:
        y = y + D_ * u_
    y = y.reshape(shape)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False,
):
    """The recurrence, one position at a time (ground truth; tiny shapes only)."""
    u_, dt, A_, B_, C_, D_, x = _prepare(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
    )
    ys = []
    for t in range(u_.shape[-1]):
        decay = torch.exp(dt[..., t, None] * A_)  # (batch, G, Dg, N)
        x = decay * x + (dt[..., t] * u_[..., t])[..., None] * B_[..., t]
        ys.append((x * C_[..., t]).sum(-1))  # (batch, G, Dg)
    y = torch.stack(ys, dim=-1)  # (batch, G, Dg, L)
    out = _finish(y, u_, D_, z, u.dtype, u.shape)
    if return_final_state:
        return out, x.reshape(u.shape[0], u.shape[1], -1)
    return out


def _chunk_closed_form(x, dt, dtu, A_, B_, C_):
    """Scan one chunk from state x in closed form.

    x: (batch, G, Dg, N); dt, dtu: (batch, G, Dg, T); B_, C_: (batch, G, 1, T, N).
    With s_t = A * cumsum(dt)_t (the log-decay from the chunk start to t, <= 0):
        x_t = exp(s_t) * x + sum_{r<=t} exp(s_t - s_r) * dt_r B_r u_r
    computed as exp(s_t - m) * (exp(m) * x + cumsum_r exp(m - s_r) dt_r B_r u_r) with m = s_T / 2,
    so that neither factor leaves [exp(-|s_T|/2), exp(|s_T|/2)].
    """
    s = torch.cumsum(dt, dim=-1)[..., None] * A_[..., None, :]  # (batch, G, Dg, T, N)
    m = 0.5 * s[..., -1:, :]  # (batch, G, Dg, 1, N)
    grow = torch.exp(s - m)
    inputs = dtu[..., None] * B_  # (batch, G, Dg, T, N)
    acc = torch.cumsum(inputs / grow, dim=-2) + torch.exp(m) * x[..., None, :]
    states = grow * acc  # (batch, G, Dg, T, N)
    y = (states * C_).sum(-1)  # (batch, G, Dg, T)
    return y, states[..., -1, :]


def _chunk_stepwise(x, dt, dtu, A_, B_, C_):
    """The same chunk walked position by position (for chunks with extreme total decay)."""
    ys = []
    for t in range(dt.shape[-1]):
        x = torch.exp(dt[..., t, None] * A_) * x + dtu[..., t, None] * B_[..., t, :]
        ys.append((x * C_[..., t, :]).sum(-1))
    return torch.stack(ys, dim=-1), x


def selective_scan_chunked(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, chunk_size: int = CHUNK_SIZE,
):
    """The recurrence in chunks of ``chunk_size`` positions (the CPU path; differentiable)."""
    u_, dt, A_, B_, C_, D_, x = _prepare(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
    )
    length = u_.shape[-1]
    B_ = B_.transpose(-1, -2)  # (batch, G, 1, L, N): chunks slice contiguous rows
    C_ = C_.transpose(-1, -2)
    dtu = dt * u_
    limit = _MAX_CHUNK_DECAY[dt.dtype]
    # Total log-decay of every chunk, checked once for all chunks (one sync, not one per chunk).
    starts = range(0, length, chunk_size)
    padded = F.pad(dt.detach(), (0, len(starts) * chunk_size - length))
    dt_sums = padded.unflatten(-1, (len(starts), chunk_size)).sum(-1)  # (batch, G, Dg, chunks)
    worst = (dt_sums * (-A_.detach()).amax(-1)[..., None]).amax(dim=(0, 1, 2))
    safe = (worst <= limit).tolist()
    ys = []
    for i, start in enumerate(starts):
        stop = min(start + chunk_size, length)
        scan = _chunk_closed_form if safe[i] else _chunk_stepwise
        y, x = scan(x, dt[..., start:stop], dtu[..., start:stop], A_,
                    B_[..., start:stop, :], C_[..., start:stop, :])
        ys.append(y)
    y = torch.cat(ys, dim=-1)  # (batch, G, Dg, L)
    out = _finish(y, u_, D_, z, u.dtype, u.shape)
    if return_final_state:
        return out, x.reshape(u.shape[0], u.shape[1], -1)
    return out
