"""Causal depthwise conv1d with SiLU fused, on the GPU: Triton kernels and their autograd Function.

``causal_conv1d_triton`` is what ``mambadna.kernels.causal_conv1d`` calls for CUDA tensors
and for ``backend="triton"`` (arguments already validated, width <= 4). The math is the
reference's (ops.py): with xs = [state | x] along L (state: the W-1 inputs before x),

    pre[t] = bias + sum_{k<W} w[k] xs[t+k]          out[t] = silu(pre[t]) (or pre[t])

Width W < 4 runs as a width-4 kernel whose first 4-W taps are zero (the kernel reads them as
constants, nothing is padded in memory), so one kernel serves every width up to 4.

Forward: one program per (tile of L, tile of channels, batch row), the 4 shifted loads of x
in registers (positions before 0 from the state), fp32 accumulation, the output in x's dtype.
x may be a channel slice of a wider tensor (the mixer's x is a view of in_proj's output):
the kernels take strides, so no copy is made. Nothing but x is kept for the backward (the
convolution and its activation are recomputed: the Mamba authors' CUDA kernel does the same).

Backward: dpre[t] = dout[t] silu'(pre[t]) and dx[t] = sum_k w'[k] dpre[t+3-k] need pre at
t..t+3, which the program recomputes from the 7 shifted loads x[t-3..t+3] (every pre from
the same registers: 7 loads of x and 4 of dout per position, all from L1 after the first).
dw and dbias are summed over the program's positions in registers and written once per
program (fp32 partial sums, reduced by the caller: no atomics, deterministic). The gradient of
an initial state (the first W-1 positions only) is formed by the caller in PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mambadna.kernels.launch import cdiv, empty

__all__ = ["MAX_WIDTH", "causal_conv1d_triton"]

MAX_WIDTH = 4
_FWD_BLOCK_D, _FWD_BLOCK_L, _FWD_WARPS = 4, 512, 4
_BWD_BLOCK_D, _BWD_BLOCK_L, _BWD_WARPS, _BWD_TILES = 4, 256, 4, 8  # tiles per program


@triton.jit
def _tap(w_ptr, d, dmask, K: tl.constexpr, W: tl.constexpr):
    """Tap K of the width-4 kernel: w[:, K - (4 - W)], zero for the 4 - W padded taps."""
    if K >= 4 - W:
        return tl.load(w_ptr + d * W + (K - (4 - W)), mask=dmask, other=0.0).to(tl.float32)
    else:
        return tl.zeros_like(d).to(tl.float32)


@triton.jit
def _load_x(x_row, s_row, t, dmask, length, sxd, ssd, E: tl.constexpr, W: tl.constexpr,
            HAS_STATE: tl.constexpr):
    """xs at positions t + E (E constexpr in [-3, 3]), fp32 [BD, BL]: x where 0 <= t+E < L, the
    state where -(W-1) <= t+E < 0, zero elsewhere."""
    p = t + E  # [BL]
    inside = dmask[:, None] & (p >= 0)[None, :] & (p < length)[None, :]
    v = tl.load(x_row + p[None, :], mask=inside, other=0.0).to(tl.float32)
    if HAS_STATE:
        if E < 0:
            before = dmask[:, None] & (p < 0)[None, :] & (p >= -(W - 1))[None, :]
            s = tl.load(s_row + (p + (W - 1))[None, :], mask=before, other=0.0)
            v += s.to(tl.float32)
    return v


@triton.jit
def _silu_grad(pre):
    """d silu(pre) / d pre = s (1 + pre (1 - s)), s = sigmoid(pre)."""
    s = 1.0 / (1.0 + tl.exp(-pre))
    return s * (1.0 + pre * (1.0 - s))


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, s_ptr, out_ptr,
    dim, length, sxb, sxd, ssb, ssd, sob, sod,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, SILU: tl.constexpr,
    BD: tl.constexpr, BL: tl.constexpr,
):
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    t = pid_l * BL + tl.arange(0, BL)
    dmask = d < dim
    x_row = x_ptr + pid_b * sxb + d.to(tl.int64)[:, None] * sxd
    s_row = s_ptr + pid_b * ssb + d.to(tl.int64)[:, None] * ssd
    acc = tl.zeros([BD, BL], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=dmask, other=0.0).to(tl.float32)[:, None]
    acc += _tap(w_ptr, d, dmask, 0, W)[:, None] * _load_x(
        x_row, s_row, t, dmask, length, sxd, ssd, -3, W, HAS_STATE)
    acc += _tap(w_ptr, d, dmask, 1, W)[:, None] * _load_x(
        x_row, s_row, t, dmask, length, sxd, ssd, -2, W, HAS_STATE)
    acc += _tap(w_ptr, d, dmask, 2, W)[:, None] * _load_x(
        x_row, s_row, t, dmask, length, sxd, ssd, -1, W, HAS_STATE)
    acc += _tap(w_ptr, d, dmask, 3, W)[:, None] * _load_x(
        x_row, s_row, t, dmask, length, sxd, ssd, 0, W, HAS_STATE)
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    out = out_ptr + pid_b * sob + d.to(tl.int64)[:, None] * sod + t[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty),
             mask=dmask[:, None] & (t < length)[None, :])


@triton.jit
def _conv_bwd_kernel(
    x_ptr, w_ptr, b_ptr, s_ptr, dout_ptr, dx_ptr, dw_ptr, db_ptr,
    dim, length, n_l_programs, sxb, sxd, ssb, ssd, sgb, sgd, sdb, sdd,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, SILU: tl.constexpr,
    BD: tl.constexpr, BL: tl.constexpr, TILES: tl.constexpr,
):
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    dmask = d < dim
    d64 = d.to(tl.int64)[:, None]
    x_row = x_ptr + pid_b * sxb + d64 * sxd
    s_row = s_ptr + pid_b * ssb + d64 * ssd
    g_row = dout_ptr + pid_b * sgb + d64 * sgd
    dx_row = dx_ptr + pid_b * sdb + d64 * sdd
    w0 = _tap(w_ptr, d, dmask, 0, W)[:, None]
    w1 = _tap(w_ptr, d, dmask, 1, W)[:, None]
    w2 = _tap(w_ptr, d, dmask, 2, W)[:, None]
    w3 = _tap(w_ptr, d, dmask, 3, W)[:, None]
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    bias = bias[:, None]
    dw0 = tl.zeros([BD], dtype=tl.float32)
    dw1 = tl.zeros([BD], dtype=tl.float32)
    dw2 = tl.zeros([BD], dtype=tl.float32)
    dw3 = tl.zeros([BD], dtype=tl.float32)
    dbias = tl.zeros([BD], dtype=tl.float32)
    for i in range(TILES):
        t = (pid_l * TILES + i) * BL + tl.arange(0, BL)
        xm3 = _load_x(x_row, s_row, t, dmask, length, sxd, ssd, -3, W, HAS_STATE)
        xm2 = _load_x(x_row, s_row, t, dmask, length, sxd, ssd, -2, W, HAS_STATE)
        xm1 = _load_x(x_row, s_row, t, dmask, length, sxd, ssd, -1, W, HAS_STATE)
        x0 = _load_x(x_row, s_row, t, dmask, length, sxd, ssd, 0, W, HAS_STATE)
        xp1 = _load_x(x_row, s_row, t, dmask, length, sxd, ssd, 1, W, HAS_STATE)
        xp2 = _load_x(x_row, s_row, t, dmask, length, sxd, ssd, 2, W, HAS_STATE)
        xp3 = _load_x(x_row, s_row, t, dmask, length, sxd, ssd, 3, W, HAS_STATE)
        # dpre at t + j, j = 0..3 (zero past the end: dout is masked there)
        g0 = tl.load(g_row + t[None, :], mask=dmask[:, None] & (t < length)[None, :],
                     other=0.0).to(tl.float32)
        g1 = tl.load(g_row + (t + 1)[None, :], mask=dmask[:, None] & (t + 1 < length)[None, :],
                     other=0.0).to(tl.float32)
        g2 = tl.load(g_row + (t + 2)[None, :], mask=dmask[:, None] & (t + 2 < length)[None, :],
                     other=0.0).to(tl.float32)
        g3 = tl.load(g_row + (t + 3)[None, :], mask=dmask[:, None] & (t + 3 < length)[None, :],
                     other=0.0).to(tl.float32)
        if SILU:
            g0 = g0 * _silu_grad(bias + w0 * xm3 + w1 * xm2 + w2 * xm1 + w3 * x0)
            g1 = g1 * _silu_grad(bias + w0 * xm2 + w1 * xm1 + w2 * x0 + w3 * xp1)
            g2 = g2 * _silu_grad(bias + w0 * xm1 + w1 * x0 + w2 * xp1 + w3 * xp2)
            g3 = g3 * _silu_grad(bias + w0 * x0 + w1 * xp1 + w2 * xp2 + w3 * xp3)
        dx = w3 * g0 + w2 * g1 + w1 * g2 + w0 * g3
        tl.store(dx_row + t[None, :], dx.to(dx_ptr.dtype.element_ty),
                 mask=dmask[:, None] & (t < length)[None, :])
        dw0 += tl.sum(g0 * xm3, axis=1)
        dw1 += tl.sum(g0 * xm2, axis=1)
        dw2 += tl.sum(g0 * xm1, axis=1)
        dw3 += tl.sum(g0 * x0, axis=1)
        dbias += tl.sum(g0, axis=1)
    part = pid_b * n_l_programs + pid_l  # this program's row of the partial sums
    dw_row = dw_ptr + part * dim * 4 + d * 4
    tl.store(dw_row + 0, dw0, mask=dmask)
    tl.store(dw_row + 1, dw1, mask=dmask)
    tl.store(dw_row + 2, dw2, mask=dmask)
    tl.store(dw_row + 3, dw3, mask=dmask)
    tl.store(db_ptr + part * dim + d, dbias, mask=dmask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t (batch, dim, L) with L contiguous (a channel slice of a wider tensor is fine)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _conv_fwd(x, weight, bias, state, silu):
    batch, dim, length = x.shape
    out = empty((batch, dim, length), x.dtype, x.device)
    grid = (cdiv(length, _FWD_BLOCK_L), cdiv(dim, _FWD_BLOCK_D), batch)
    s = state if state is not None else x
    _conv_fwd_kernel[grid](
        x, weight, bias if bias is not None else weight, s, out,
        dim, length, x.stride(0), x.stride(1), s.stride(0), s.stride(1),
        out.stride(0), out.stride(1),
        W=weight.shape[1], HAS_BIAS=bias is not None, HAS_STATE=state is not None, SILU=silu,
        BD=_FWD_BLOCK_D, BL=_FWD_BLOCK_L, num_warps=_FWD_WARPS,
    )
    return out


def _conv_bwd(x, weight, bias, state, dout, silu):
    batch, dim, length = x.shape
    dx = empty((batch, dim, length), x.dtype, x.device)
    n_l = cdiv(length, _BWD_BLOCK_L * _BWD_TILES)
    dw = torch.empty((batch * n_l, dim, 4), dtype=torch.float32, device=x.device)
    db = torch.empty((batch * n_l, dim), dtype=torch.float32, device=x.device)
    s = state if state is not None else x
    _conv_bwd_kernel[(n_l, cdiv(dim, _BWD_BLOCK_D), batch)](
        x, weight, bias if bias is not None else weight, s, dout, dx, dw, db,
        dim, length, n_l, x.stride(0), x.stride(1), s.stride(0), s.stride(1),
        dout.stride(0), dout.stride(1), dx.stride(0), dx.stride(1),
        W=weight.shape[1], HAS_BIAS=bias is not None, HAS_STATE=state is not None, SILU=silu,
        BD=_BWD_BLOCK_D, BL=_BWD_BLOCK_L, TILES=_BWD_TILES, num_warps=_BWD_WARPS,
    )
    width = weight.shape[1]
    return dx, dw.sum(0)[:, 4 - width:], db.sum(0)


class _CausalConv1d(torch.autograd.Function):
    """out = act(conv(x)); saves x (and the state), recomputes the convolution backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, state, silu):
        x = _rows(x)
        w = weight.contiguous()
        state = None if state is None else state.to(x.dtype).contiguous()
        out = _conv_fwd(x, w, bias, state, silu)
        ctx.save_for_backward(x, w, bias, state)
        ctx.silu = silu
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w, bias, state = ctx.saved_tensors
        dx, dw, db = _conv_bwd(x, w, bias, state, _rows(dout), ctx.silu)
        dstate = None
        if state is not None and ctx.needs_input_grad[3]:
            dstate = _state_grad(x, w, bias, state, dout, ctx.silu)
        return (dx, dw.to(w.dtype), None if bias is None else db.to(bias.dtype), dstate, None)


def _state_grad(x, weight, bias, state, dout, silu):
    """Gradient of the initial state: only the first W-1 outputs read it; autograd through
    their convolution in PyTorch gives it (a few small ops, only when a state needs one)."""
    head = min(state.shape[-1], x.shape[-1])
    if head == 0:  # width 1: the state is empty
        return torch.zeros_like(state)
    with torch.enable_grad():
        s = state.detach().float().requires_grad_(True)
        full = torch.cat([s, x[..., :head].detach().float()], dim=-1)
        out = F.conv1d(full, weight.detach().float().unsqueeze(1),
                       None if bias is None else bias.detach().float(), groups=x.shape[1])
        if silu:
            out = F.silu(out)
        (grad,) = torch.autograd.grad(out, s, dout[..., :head].float())
    return grad.to(state.dtype)


def causal_conv1d_triton(x, weight, bias=None, initial_state=None, return_final_state=False,
                         activation=None):
    """The Triton causal conv1d (arguments validated by ``causal_conv1d``; width <= 4).

    Differentiable in x, weight, bias and initial_state; the final state (the last W-1
    columns of [state | x]) is formed by torch ops on x and the state, so its gradient flows
    through autograd too.
    """
    out = _CausalConv1d.apply(x, weight, bias, initial_state, activation is not None)
    if not return_final_state:
        return out
    width = weight.shape[1]
    length = x.shape[-1]
    if width == 1:
        return out, x.new_zeros(x.shape[0], x.shape[1], 0)
    if length >= width - 1:  # the state is x's last W-1 columns: one copy, no zeros or cat
        return out, x[..., length - (width - 1):].clone()
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], x.shape[1], width - 1)
    final = torch.cat([initial_state.to(x.dtype), x], dim=-1)[..., -(width - 1):]
    return out, final
