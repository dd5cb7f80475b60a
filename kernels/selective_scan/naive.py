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
    Returns y (batch, G, Dg, T), the states (batch, G, Dg, T, N), the inputs dt B u (same shape),
    grow = exp(s - m) and exp(m).
    """
    s = torch.cumsum(dt, dim=-1)[..., None] * A_[..., None, :]  # (batch, G, Dg, T, N)
    m = 0.5 * s[..., -1:, :]  # (batch, G, Dg, 1, N)
    grow = torch.exp(s - m)
    shrink = torch.exp(m)
    inputs = dtu[..., None] * B_  # (batch, G, Dg, T, N)
    states = grow * (torch.cumsum(inputs / grow, dim=-2) + shrink * x[..., None, :])
    y = (states * C_).sum(-1)  # (batch, G, Dg, T)
    return y, states, inputs, grow, shrink


def _chunk_adjoint(x, dt, dtu, A_, B_, C_, gy, carry):
    """Gradients of one closed-form chunk, recomputed from its start state x.

    gy: (batch, G, Dg, T) gradient of y; carry: (batch, G, Dg, N) gradient of the chunk's last
    state (from the chunks after it and the final-state output). The adjoint of the states,
        lam_t = sum_{r>=t} exp(s_r - s_t) C_r gy_r + exp(s_{T-1} - s_t) carry,
    uses the same two bounded factors as the forward. With q_t = lam_t * exp(dt_t A) x_{t-1}
    (= lam_t * (x_t - dt_t B_t u_t)), the gradients are
        d(dt u)_t = sum_n lam_t B_t,  dB_t = sum_d lam_t dt_t u_t,  dC_t = sum_d gy_t x_t,
        d(dt)_t = sum_n A q_t,  dA = sum_t dt_t q_t,  dx = exp(s_0) lam_0.
    """
    _, states, inputs, grow, shrink = _chunk_closed_form(x, dt, dtu, A_, B_, C_)
    weighted = gy[..., None] * C_ * grow  # (batch, G, Dg, T, N)
    from_later = torch.flip(torch.cumsum(torch.flip(weighted, (-2,)), dim=-2), (-2,))
    lam = (from_later + grow[..., -1:, :] * carry[..., None, :]) / grow
    q = lam * (states - inputs)
    d_dtu = (lam * B_).sum(-1)
    d_dt = (q * A_[..., None, :]).sum(-1)
    d_A = (q * dt[..., None]).sum(dim=(0, 3))  # (G, Dg, N)
    d_B = (lam * dtu[..., None]).sum(dim=2, keepdim=True)  # (batch, G, 1, T, N)
    d_C = (gy[..., None] * states).sum(dim=2, keepdim=True)
    d_x = grow[..., 0, :] * shrink[..., 0, :] * lam[..., 0, :]
    return d_x, d_dt, d_dtu, d_A, d_B, d_C


def _chunk_stepwise(x, dt, dtu, A_, B_, C_):
    """The same chunk walked position by position (for chunks with extreme total decay)."""
    ys = []
    for t in range(dt.shape[-1]):
        x = torch.exp(dt[..., t, None] * A_) * x + dtu[..., t, None] * B_[..., t, :]
        ys.append((x * C_[..., t, :]).sum(-1))
    return torch.stack(ys, dim=-1), x


def _chunk_stepwise_adjoint(x, dt, dtu, A_, B_, C_, gy, carry):
    """Gradients of a stepwise chunk by autograd over its recomputation (rare chunks only)."""
    leaves = [t.detach().requires_grad_(True) for t in (x, dt, dtu, A_, B_, C_)]
    with torch.enable_grad():
        y, last = _chunk_stepwise(*leaves)
        grads = torch.autograd.grad((y, last), leaves, (gy, carry), allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves))


class _ChunkedScan(torch.autograd.Function):
    """The chunked scan with a recomputing backward: saves only each chunk's start state.

    Inputs in the grouped layout of ``_prepare``: dt, dtu (batch, G, Dg, L), A_ (G, Dg, N),
    B_, C_ (batch, G, 1, L, N), x0 (batch, G, Dg, N). Returns y (batch, G, Dg, L) and the last
    state. Autograd through the closed form would keep about five (batch, dim, L, N) tensors;
    this keeps (batch, dim, L / chunk, N) and is faster.
    """

    @staticmethod
    def forward(ctx, dt, dtu, A_, B_, C_, x0, chunk_size, safe):
        length = dt.shape[-1]
        x, ys, starts = x0, [], []
        for i, start in enumerate(range(0, length, chunk_size)):
            stop = min(start + chunk_size, length)
            starts.append(x)
            part = (x, dt[..., start:stop], dtu[..., start:stop], A_,
                    B_[..., start:stop, :], C_[..., start:stop, :])
            if safe[i]:
                y, states, *_ = _chunk_closed_form(*part)
                x = states[..., -1, :]
            else:
                y, x = _chunk_stepwise(*part)
            ys.append(y)
        ctx.save_for_backward(dt, dtu, A_, B_, C_, torch.stack(starts, dim=-2))
        ctx.chunk_size, ctx.safe = chunk_size, safe
        return torch.cat(ys, dim=-1), x

    @staticmethod
    def backward(ctx, gy, g_last):
        dt, dtu, A_, B_, C_, starts = ctx.saved_tensors
        chunk_size, length = ctx.chunk_size, dt.shape[-1]
        gy = torch.zeros_like(dt) if gy is None else gy
        carry = torch.zeros_like(starts[..., 0, :]) if g_last is None else g_last
        d_A = torch.zeros_like(A_)
        pieces = []
        for i in reversed(range(starts.shape[-2])):
            start, stop = i * chunk_size, min((i + 1) * chunk_size, length)
            adjoint = _chunk_adjoint if ctx.safe[i] else _chunk_stepwise_adjoint
            carry, d_dt, d_dtu, d_Ai, d_B, d_C = adjoint(
                starts[..., i, :], dt[..., start:stop], dtu[..., start:stop], A_,
                B_[..., start:stop, :], C_[..., start:stop, :], gy[..., start:stop], carry)
            d_A += d_Ai
            pieces.append((d_dt, d_dtu, d_B, d_C))
        d_dt, d_dtu, d_B, d_C = (torch.cat(p[::-1], dim=i)
                                 for p, i in zip(zip(*pieces), (-1, -1, -2, -2)))
        return d_dt, d_dtu, d_A, d_B, d_C, carry, None, None


def _safe_chunks(dt, A_, chunk_size: int) -> list[bool]:
    """Chunks whose total log-decay the closed form can take (one check for all chunks)."""
    n_chunks = -(-dt.shape[-1] // chunk_size)
    padded = F.pad(dt.detach(), (0, n_chunks * chunk_size - dt.shape[-1]))
    dt_sums = padded.unflatten(-1, (n_chunks, chunk_size)).sum(-1)  # (batch, G, Dg, chunks)
    worst = (dt_sums * (-A_.detach()).amax(-1)[..., None]).amax(dim=(0, 1, 2))
    return (worst <= _MAX_CHUNK_DECAY[dt.dtype]).tolist()


def selective_scan_chunked(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, chunk_size: int = CHUNK_SIZE,
):
    """The recurrence in chunks of ``chunk_size`` positions (the CPU path; differentiable)."""
    u_, dt, A_, B_, C_, D_, x0 = _prepare(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
    )
    # (batch, G, 1, L, N): a chunk is then a block of contiguous rows.
    B_, C_ = B_.transpose(-1, -2), C_.transpose(-1, -2)
    y, last = _ChunkedScan.apply(dt, dt * u_, A_, B_, C_, x0, chunk_size,
                                 _safe_chunks(dt, A_, chunk_size))
    out = _finish(y, u_, D_, z, u.dtype, u.shape)
    if return_final_state:
        return out, last.reshape(u.shape[0], u.shape[1], -1)
    return out
