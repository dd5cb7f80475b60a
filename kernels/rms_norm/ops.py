"""RMSNorm with an optional residual add, the residual stream kept in fp32.

For rows of width N (the last axis)::

    r   = float32(x) + float32(residual)          (r = float32(x) without a residual)
    out = r / sqrt(mean(r^2) + eps) * weight      (computed in fp32, stored in out_dtype)

Returns (out, r): r is the new residual stream, for the next block's add. Fusing the add with
the norm reads x and the residual once and writes r and out once (12 bytes per element with a
bf16 x and out), where the separate PyTorch ops make about six fp32 passes.

- ``rms_norm_reference``: the formula above in PyTorch ops (ground truth; CPU path).
- ``rms_norm``: the public op (validates, then the Triton kernels on CUDA tensors).
"""

from __future__ import annotations

import torch

BACKENDS = ("auto", "triton", "reference")


def rms_norm_reference(x, weight, residual=None, eps=1e-5, out_dtype=None):
    """The definition in fp32 PyTorch ops; returns (out in out_dtype or fp32, r fp32)."""
    r = x.float() if residual is None else x.float() + residual.float()
    out = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return out.to(out_dtype or torch.float32), r


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"rms_norm: {message}")


def _triton_impl():
    try:
        from mambadna.kernels.rms_norm.triton import rms_norm_triton
    except ImportError:
        return None
    return rms_norm_triton


def rms_norm(x, weight, residual=None, eps=1e-5, out_dtype=None, backend="auto"):
    """RMSNorm of ``x + residual`` over the last axis; returns (out, new residual stream).

    x: (..., N) any float dtype; residual: None or x's shape (fp32 recommended: the stream);
    weight: (N,). out is in ``out_dtype`` (default fp32), the stream in fp32. Differentiable in
    x, residual and weight. ``backend``: "auto" (Triton on CUDA tensors, PyTorch on CPU),
    "triton" (forced; runs on CPU tensors under TRITON_INTERPRET=1), "reference".
    """
    _check(backend in BACKENDS, f"backend must be one of {BACKENDS}, got {backend!r}")
    _check(isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 1,
           f"x must be a floating-point tensor (..., N), got {getattr(x, 'dtype', type(x))}")
    n = x.shape[-1]
    _check(isinstance(weight, torch.Tensor) and weight.shape == (n,),
           f"weight must be (N,) = ({n},), got {tuple(getattr(weight, 'shape', ()))}")
    if residual is not None:
        _check(isinstance(residual, torch.Tensor) and residual.shape == x.shape,
               f"residual must have x's shape {tuple(x.shape)}, "
               f"got {tuple(getattr(residual, 'shape', ()))}")
    devices = {t.device for t in (x, weight, residual) if t is not None}
    _check(len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}")
    _check(eps >= 0, f"eps must be >= 0, got {eps}")
    if backend == "triton" or (backend == "auto" and x.is_cuda):
        impl = _triton_impl()
        if impl is not None:
            return impl(x, weight, residual, eps, out_dtype)
        _check(backend != "triton", "backend='triton' needs Triton installed; use 'reference'")
    return rms_norm_reference(x, weight, residual, eps, out_dtype)
