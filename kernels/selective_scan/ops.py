"""The selective scan's public function: validates its arguments and picks an implementation.

- ``selective_scan``: the Triton kernels (``triton.py``) on CUDA tensors, the compiled C kernel
  (``cpu.py``) on CPU where it was built, else the chunked PyTorch scan (``naive.py``);
  ``backend`` forces one. The contract (shapes, dtypes, gradients)
  is in its docstring and kernels/README.md.

Modules (the model) call this function only, never an implementation directly.
"""

from __future__ import annotations

import logging

import torch

from mambadna.kernels.selective_scan import cpu
from mambadna.kernels.selective_scan.config import ScanConfig
from mambadna.kernels.selective_scan.naive import (
    selective_scan_chunked,
    selective_scan_reference,
)

__all__ = ["BACKENDS", "selective_scan"]

BACKENDS = ("auto", "triton", "compiled", "reference", "loop")

_log = logging.getLogger(__name__)
_fallback_logged = False


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"selective_scan: {message}")


def _validate(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    """Shapes, dtypes and devices of the selective-scan arguments (see ``selective_scan``)."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        _check(isinstance(t, torch.Tensor),
               f"{name} must be a torch.Tensor, got {type(t).__name__}")
        _check(t.is_floating_point(), f"{name} must be floating point, got {t.dtype}")
    _check(u.dim() == 3, f"u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    _check(length > 0, "L must be at least 1")
    _check(delta.shape == u.shape,
           f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    _check(A.dim() == 2 and A.shape[0] == dim, f"A must be (dim={dim}, N), got {tuple(A.shape)}")
    _check(A.dtype in (torch.float32, torch.float64), f"A must be fp32, got {A.dtype}")
    n_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            _check(t.shape == (batch, n_state, length),
                   f"{name} must be (batch, N, L) = {(batch, n_state, length)}, "
                   f"got {tuple(t.shape)}")
        else:
            _check(t.dim() == 4 and t.shape[0] == batch and t.shape[2:] == (n_state, length),
                   f"{name} must be (batch, N, L) or (batch, groups, N, L) with batch={batch}, "
                   f"N={n_state}, L={length}; got {tuple(t.shape)}")
            _check(dim % t.shape[1] == 0,
                   f"dim={dim} is not divisible by {name}'s groups={t.shape[1]}")
    _check(B.shape == C.shape,
           f"B and C must have the same shape, got {tuple(B.shape)} and {tuple(C.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check(t.shape == (dim,), f"{name} must be (dim,) = ({dim},), got {tuple(t.shape)}")
    if z is not None:
        _check(z.shape == u.shape, f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    if initial_state is not None:
        _check(initial_state.shape == (batch, dim, n_state),
               f"initial_state must be (batch, dim, N) = {(batch, dim, n_state)}, "
               f"got {tuple(initial_state.shape)}")
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    devices = {t.device for t in tensors if t is not None}
    _check(len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}")


def _triton_impl():
    """The Triton implementation, or None when Triton (or its kernels) cannot be imported."""
    try:
        from mambadna.kernels.selective_scan.triton import selective_scan_triton
    except ImportError:
        return None
    return selective_scan_triton


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, backend="auto", config=None,
):
    """Selective scan (Mamba's S6), differentiable in every tensor argument.

    Shapes: u, delta, z: (batch, dim, L); A: (dim, N) fp32; B, C: (batch, N, L) or
    (batch, groups, N, L); D, delta_bias: (dim,) fp32; initial_state: (batch, dim, N) fp32.
    Returns ``out`` (batch, dim, L) in u's dtype, and with ``return_final_state`` also the fp32
    state after the last position, (batch, dim, N), which can be passed back as
    ``initial_state`` to continue the sequence exactly.

    ``backend``: "auto" (Triton on CUDA; on CPU the compiled kernel where it applies, else
    chunked PyTorch), "triton" (forced; runs on CPU tensors under TRITON_INTERPRET=1),
    "compiled" (the C kernel, forced: CPU tensors, not fp64, N <= 64), "reference" (chunked
    PyTorch), "loop" (the per-position definition; tiny inputs only). ``config``: a
    ``ScanConfig``, the Triton kernels' tiling for this call (None: the innermost ``with
    scan_config(...)`` block's, else the defaults, the fastest measured; see ``config.py``);
    the other backends ignore it.
    """
    _check(backend in BACKENDS, f"backend must be one of {BACKENDS}, got {backend!r}")
    _check(config is None or isinstance(config, ScanConfig),
           f"config must be a ScanConfig or None, got {type(config).__name__}")
    _validate(u, delta, A, B, C, D, z, delta_bias, initial_state)
    args = (u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), initial_state,
            bool(return_final_state))
    if backend == "loop":
        return selective_scan_reference(*args)
    if backend == "reference":
        return selective_scan_chunked(*args)
    if backend == "compiled":
        _check(cpu.available(), "backend='compiled' needs the compiled CPU kernel, which was not "
               "built at install (no C compiler?); reinstall with a C compiler or use "
               "backend='reference'")
        _check(not u.is_cuda, "backend='compiled' runs on CPU tensors only")
        _check(_compiled_applies(u, delta, A, B, C, initial_state),
               f"backend='compiled' takes fp32/bf16/fp16 inputs and N <= {cpu.max_state()}")
        return cpu.selective_scan_compiled(*args)
    if backend == "triton" or u.is_cuda:
        impl = _triton_impl()
        if impl is not None:
            return impl(*args, config=config)
        if backend == "triton":
            raise RuntimeError(
                "selective_scan: backend='triton' needs the Triton kernels; install Triton "
                "(pip install 'mambadna[gpu]') or use backend='reference'"
            )
        global _fallback_logged
        if not _fallback_logged:
            _log.warning("Triton is not available: selective_scan falls back to the PyTorch "
                         "reference on CUDA (slow); pip install 'mambadna[gpu]' to fix")
            _fallback_logged = True
    if u.device.type == "cpu" and cpu.available() and _compiled_applies(
            u, delta, A, B, C, initial_state):
        return cpu.selective_scan_compiled(*args)
    return selective_scan_chunked(*args)


def _compiled_applies(u, delta, A, B, C, initial_state) -> bool:
    """Inputs the compiled CPU kernel takes: no fp64 (gradcheck stays on the reference), N <= 64."""
    tensors = (u, delta, A, B, C, initial_state)
    return (A.shape[1] <= cpu.max_state()
            and all(t is None or t.dtype != torch.float64 for t in tensors))
