"""One position of the selective scan, for streaming and generation.

Given the state x after position t-1, for every (batch b, channel d, state n)::

    dt[b,d]     = softplus(dt[b,d] + dt_bias[d])               (bias/softplus optional)
    x'[b,d,n]   = exp(dt * A[d,n]) * x[b,d,n] + dt * B[b,n] * u[b,d]
    y[b,d]      = sum_n C[b,n] * x'[b,d,n]  +  D[d] * u[b,d]
    out[b,d]    = y * silu(z[b,d])                            (gate optional)

the same arithmetic as one column of ``selective_scan`` (naive.py), so stepping a
sequence position by position reproduces the scan to fp32 rounding. With grouped B/C of shape
(batch, groups, N), channel d reads group d // (dim // groups).

- ``selective_state_update_reference``: the formula above in PyTorch (ground truth).
- ``selective_state_update``: the public op (validates, then runs the reference; one step is a
  handful of small elementwise ops, launch-bound on any device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """fp64 if any input is fp64 (gradcheck), fp32 otherwise (bf16/fp16 inputs are upcast)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _per_channel(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C, (batch, N) or (batch, G, N) -> (batch, dim or 1, N) in ``dtype``."""
    t = t.to(dtype)
    if t.dim() == 2:
        return t[:, None, :]  # (batch, 1, N): broadcast over channels
    return t.repeat_interleave(dim // t.shape[1], dim=1)  # (batch, dim, N)


def selective_state_update_reference(
    state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
):
    """The step formula in PyTorch; arguments as ``selective_state_update``."""
    dtype = _compute_dtype(state, x, dt, A, B, C, D, z, dt_bias)
    dim = x.shape[1]
    u = x.to(dtype)
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    B_ = _per_channel(B, dim, dtype)
    C_ = _per_channel(C, dim, dtype)
    decay = torch.exp(dt[..., None] * A.to(dtype))  # (batch, dim, N)
    new_state = decay * state.to(dtype) + (dt * u)[..., None] * B_
    y = (new_state * C_).sum(-1)  # (batch, dim)
    if D is not None:
        y = y + D.to(dtype) * u
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(x.dtype), new_state


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"selective_state_update: {message}")


def _validate(state, x, dt, A, B, C, D, z, dt_bias) -> None:
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        _check(isinstance(t, torch.Tensor),
               f"{name} must be a torch.Tensor, got {type(t).__name__}")
        _check(t.is_floating_point(), f"{name} must be floating point, got {t.dtype}")
    _check(x.dim() == 2, f"x must be (batch, dim), got shape {tuple(x.shape)}")
    batch, dim = x.shape
    _check(dt.shape == x.shape, f"dt must have x's shape {tuple(x.shape)}, got {tuple(dt.shape)}")
    _check(A.dim() == 2 and A.shape[0] == dim, f"A must be (dim={dim}, N), got {tuple(A.shape)}")
    n_state = A.shape[1]
    _check(state.shape == (batch, dim, n_state),
           f"state must be (batch, dim, N) = {(batch, dim, n_state)}, got {tuple(state.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 2:
            _check(t.shape == (batch, n_state),
                   f"{name} must be (batch, N) = {(batch, n_state)}, got {tuple(t.shape)}")
        else:
            _check(t.dim() == 3 and t.shape[0] == batch and t.shape[2] == n_state,
                   f"{name} must be (batch, N) or (batch, groups, N) with batch={batch}, "
                   f"N={n_state}; got {tuple(t.shape)}")
            _check(dim % t.shape[1] == 0,
                   f"dim={dim} is not divisible by {name}'s groups={t.shape[1]}")
    _check(B.shape == C.shape,
           f"B and C must have the same shape, got {tuple(B.shape)} and {tuple(C.shape)}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None:
            _check(t.shape == (dim,), f"{name} must be (dim,) = ({dim},), got {tuple(t.shape)}")
    if z is not None:
        _check(z.shape == x.shape, f"z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    devices = {t.device for t in (state, x, dt, A, B, C, D, z, dt_bias) if t is not None}
    _check(len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}")


def selective_state_update(
    state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
):
    """Advance the selective scan by one position.

    state: (batch, dim, N) fp32, the state after the previous position (zeros at the start);
    x, dt, z: (batch, dim); A: (dim, N); B, C: (batch, N) or (batch, groups, N);
    D, dt_bias: (dim,). Returns ``(out, new_state)``: out (batch, dim) in x's dtype, new_state
    (batch, dim, N) fp32 (fp64 for fp64 inputs). ``state`` is not modified in place.
    """
    _validate(state, x, dt, A, B, C, D, z, dt_bias)
    return selective_state_update_reference(state, x, dt, A, B, C, D, z, dt_bias,
                                            bool(dt_softplus))
