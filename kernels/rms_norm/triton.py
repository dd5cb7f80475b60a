"""The fused residual add + RMSNorm on the GPU: Triton kernels and their autograd Function.

``rms_norm_triton`` is what ``mambadna.kernels.rms_norm.rms_norm`` calls for CUDA tensors and for
``backend="triton"`` (arguments already validated). Rows of width N (d_model: 128 or 256 in
the presets) are one [rows, N] tile per step; a program walks row tiles with a stride of the
grid (about 8 programs per SM), so the weight is loaded once and dweight is summed in
registers and written once per program (fp32 partial sums, reduced by the caller).

Forward: r = x + residual (fp32), rstd = 1/sqrt(mean(r^2) + eps), out = r rstd w. Saved for the
backward: r (the residual stream, which the next block needs anyway) and rstd (4 bytes a row).
Backward: with xhat = r rstd and g = dout w, dr = rstd (g - xhat mean(g xhat)) + dr_next,
which is both d x and d residual; dweight = sum over rows of dout xhat.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from mambadna.kernels.launch import cdiv, empty, num_sms

__all__ = ["rms_norm_triton"]

_ELEMENTS = 4096  # elements per row tile
_WARPS = 4
_PROGRAMS_PER_SM = 8


@triton.jit
def _rms_fwd_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, r_ptr, rstd_ptr, rows, n, eps, n_tiles,
    HAS_RES: tl.constexpr, STORE_R: tl.constexpr, BR: tl.constexpr, BN: tl.constexpr,
):
    cols = tl.arange(0, BN)
    cmask = cols < n
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        row = (tile * BR + tl.arange(0, BR)).to(tl.int64)
        mask = (row < rows)[:, None] & cmask[None, :]
        offs = row[:, None] * n + cols[None, :]
        r = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            r += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(r * r, axis=1) / n + eps)
        out = r * rstd[:, None] * w[None, :]
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
        if STORE_R:
            tl.store(r_ptr + offs, r, mask=mask)
        tl.store(rstd_ptr + row, rstd, mask=row < rows)


@triton.jit
def _rms_bwd_kernel(
    dout_ptr, dnext_ptr, r_ptr, rstd_ptr, w_ptr, dx_ptr, dres_ptr, dw_ptr, rows, n, n_tiles,
    HAS_DNEXT: tl.constexpr, STORE_DX: tl.constexpr, STORE_DRES: tl.constexpr,
    BR: tl.constexpr, BN: tl.constexpr,
):
    cols = tl.arange(0, BN)
    cmask = cols < n
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([BN], dtype=tl.float32)
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        row = (tile * BR + tl.arange(0, BR)).to(tl.int64)
        rmask = row < rows
        mask = rmask[:, None] & cmask[None, :]
        offs = row[:, None] * n + cols[None, :]
        dout = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row, mask=rmask, other=0.0)
        xhat = tl.load(r_ptr + offs, mask=mask, other=0.0) * rstd[:, None]
        g = dout * w[None, :]
        c = tl.sum(g * xhat, axis=1) / n
        dr = (g - xhat * c[:, None]) * rstd[:, None]
        if HAS_DNEXT:
            dr += tl.load(dnext_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if STORE_DX:
            tl.store(dx_ptr + offs, dr.to(dx_ptr.dtype.element_ty), mask=mask)
        if STORE_DRES:
            tl.store(dres_ptr + offs, dr.to(dres_ptr.dtype.element_ty), mask=mask)
        dw += tl.sum(dout * xhat, axis=0)
    tl.store(dw_ptr + tl.program_id(0) * BN + cols, dw, mask=cmask)


@functools.lru_cache(maxsize=256)
def _geometry(rows: int, n: int, device) -> tuple[int, int, int, int]:
    """(rows per tile, padded width, tiles, programs), remembered per shape (host time)."""
    bn = triton.next_power_of_2(n)
    br = max(1, min(_ELEMENTS // bn, triton.next_power_of_2(rows)))
    n_tiles = cdiv(rows, br)
    return br, bn, n_tiles, max(1, min(n_tiles, num_sms(device) * _PROGRAMS_PER_SM))


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, residual, eps, out_dtype):
        shape, n = x.shape, x.shape[-1]
        x2 = x.reshape(-1, n).contiguous()
        res2 = None if residual is None else residual.reshape(-1, n).contiguous()
        rows = x2.shape[0]
        # Without a residual an fp32 x is the stream itself: nothing to write.
        store_r = res2 is not None or x2.dtype != torch.float32
        out = empty((rows, n), out_dtype, x.device)
        r = empty((rows, n), torch.float32, x.device) if store_r else x2
        rstd = empty((rows,), torch.float32, x.device)
        br, bn, n_tiles, programs = _geometry(rows, n, x.device)
        _rms_fwd_kernel[(programs,)](
            x2, res2 if res2 is not None else x2, weight, out, r, rstd, rows, n, float(eps),
            n_tiles, HAS_RES=res2 is not None, STORE_R=store_r, BR=br, BN=bn,
            num_warps=_WARPS)
        ctx.save_for_backward(r, rstd, weight)
        ctx.x_dtype = x.dtype
        ctx.res_dtype = None if residual is None else residual.dtype
        return out.reshape(shape), r.reshape(shape)

    @staticmethod
    def backward(ctx, dout, dnext):
        r, rstd, weight = ctx.saved_tensors
        n = r.shape[-1]
        rows = r.shape[0]
        dout2 = dout.reshape(-1, n).contiguous()
        dnext2 = None if dnext is None else dnext.reshape(-1, n).contiguous()
        want_x, _, want_res = ctx.needs_input_grad[:3]
        dx = empty((rows, n), ctx.x_dtype, r.device) if want_x else None
        dres = empty((rows, n), ctx.res_dtype, r.device) if want_res else None
        br, bn, n_tiles, programs = _geometry(rows, n, r.device)
        dw = torch.empty((programs, bn), dtype=torch.float32, device=r.device)
        _rms_bwd_kernel[(programs,)](
            dout2, dnext2 if dnext2 is not None else dout2, r, rstd, weight,
            dx if dx is not None else dout2, dres if dres is not None else dout2, dw,
            rows, n, n_tiles, HAS_DNEXT=dnext2 is not None, STORE_DX=dx is not None,
            STORE_DRES=dres is not None, BR=br, BN=bn, num_warps=_WARPS)
        shape = dout.shape
        dweight = dw.sum(0)[:n].to(weight.dtype) if ctx.needs_input_grad[1] else None
        return (None if dx is None else dx.reshape(shape), dweight,
                None if dres is None else dres.reshape(shape), None, None)


def rms_norm_triton(x, weight, residual=None, eps=1e-5, out_dtype=None):
    """Fused residual add + RMSNorm (validated by ``rms_norm``): (out, fp32 stream)."""
    return _RMSNorm.apply(x, weight, residual, eps, out_dtype or torch.float32)
