"""Causal depthwise convolution with state, for Mamba's short convolution (d_conv = 4).

For every (batch b, channel d, position t) and kernel width W::

    out[b,d,t] = bias[d] + sum_{k<W} weight[d,k] * xs[b,d,t+k]      xs = [state | x] along L

where ``state`` holds the W-1 inputs that came before ``x`` (zeros at a sequence start). The
final state is the last W-1 columns of ``[state | x]``: passing it back as ``initial_state`` with
the next piece of the sequence gives exactly the convolution of the whole sequence.

- ``causal_conv1d_reference``: ``F.conv1d`` over the state prepended to x (ground truth).
- ``causal_conv1d_update``: one position, for streaming and generation.
- ``causal_conv1d``: the public op (validates, then the Triton kernels of ``triton.py`` on CUDA
  tensors for widths up to 4, SiLU fused, the convolution recomputed in the backward instead of
  saved; on CPU the compiled C kernel of ``cpu.py``, the same fusion, where it was built).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from mambadna.kernels.conv1d import cpu

ACTIVATIONS = (None, "silu", "swish")
BACKENDS = ("auto", "triton", "compiled", "reference")

_log = logging.getLogger(__name__)
_fallback_logged = False


def _activate(out: torch.Tensor, activation: str | None) -> torch.Tensor:
    return out if activation is None else F.silu(out)


def causal_conv1d_reference(
    x, weight, bias=None, initial_state=None, return_final_state=False, activation=None,
):
    """``F.conv1d`` on ``[initial_state | x]``: x (batch, dim, L), weight (dim, W).

    Returns out (batch, dim, L) in x's dtype [, final_state (batch, dim, W-1) in x's dtype].
    """
    batch, dim, length = x.shape
    width = weight.shape[1]
    if initial_state is None:
        initial_state = x.new_zeros(batch, dim, width - 1)
    full = torch.cat([initial_state.to(x.dtype), x], dim=-1)  # (batch, dim, W-1+L)
    out = F.conv1d(full, weight.to(x.dtype).unsqueeze(1), None if bias is None else
                   bias.to(x.dtype), groups=dim)  # (batch, dim, L)
    out = _activate(out, activation)
    if return_final_state:
        # A copy, so that a carried state does not keep the whole (batch, dim, L) input alive.
        return out, full[..., length:].clone()
    return out


def _check(cond: bool, op: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{op}: {message}")


def _validate_common(op, x, weight, bias, state, state_name, activation) -> None:
    """Shared checks of both ops; x must already be known to be (batch, dim, ...)."""
    for name, t in (("x", x), ("weight", weight)):
        _check(isinstance(t, torch.Tensor), op,
               f"{name} must be a torch.Tensor, got {type(t).__name__}")
        _check(t.is_floating_point(), op, f"{name} must be floating point, got {t.dtype}")
    batch, dim = x.shape[:2]
    _check(weight.dim() == 2 and weight.shape[0] == dim and weight.shape[1] >= 1, op,
           f"weight must be (dim={dim}, width >= 1), got {tuple(weight.shape)}")
    width = weight.shape[1]
    if bias is not None:
        _check(bias.shape == (dim,), op, f"bias must be (dim,) = ({dim},), got {tuple(bias.shape)}")
    if state is not None:
        _check(state.shape == (batch, dim, width - 1), op,
               f"{state_name} must be (batch, dim, width-1) = {(batch, dim, width - 1)}, "
               f"got {tuple(state.shape)}")
    _check(activation in ACTIVATIONS, op,
           f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    devices = {t.device for t in (x, weight, bias, state) if t is not None}
    _check(len(devices) == 1, op,
           f"all tensors must be on one device, got {sorted(map(str, devices))}")


def _triton_impl():
    """The Triton implementation, or None when Triton cannot be imported."""
    try:
        from mambadna.kernels.conv1d.triton import causal_conv1d_triton
    except ImportError:
        return None
    return causal_conv1d_triton


def causal_conv1d(
    x, weight, bias=None, initial_state=None, return_final_state=False, activation=None,
    backend="auto",
):
    """Causal depthwise conv1d over L with an optional carried state.

    x: (batch, dim, L); weight: (dim, W); bias: (dim,); initial_state: (batch, dim, W-1), the
    W-1 inputs before x (zeros when None). activation: None or "silu" ("swish" is an alias).
    Returns out (batch, dim, L) in x's dtype, and with ``return_final_state`` also the state
    after x, (batch, dim, W-1) in x's dtype, to pass as ``initial_state`` with the next piece.

    ``backend``: "auto" (the Triton kernels on CUDA tensors when W <= 4; on CPU the compiled
    kernel where it applies; else ``F.conv1d``), "triton" (forced; runs on CPU tensors under
    TRITON_INTERPRET=1), "compiled" (the C kernel, forced: CPU tensors, not fp64),
    "reference" (``F.conv1d``).
    Differentiable in x, weight, bias and initial_state.
    """
    op = "causal_conv1d"
    _check(backend in BACKENDS, op, f"backend must be one of {BACKENDS}, got {backend!r}")
    _check(isinstance(x, torch.Tensor) and x.dim() == 3, op,
           f"x must be a (batch, dim, L) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    _check(x.shape[-1] >= 1, op, "L must be at least 1")
    _validate_common(op, x, weight, bias, initial_state, "initial_state", activation)
    args = (x, weight, bias, initial_state, return_final_state, activation)
    if backend == "compiled" or (backend == "auto" and cpu.applies(x, weight)):
        _check(cpu.applies(x, weight), op,
               "backend='compiled' needs the compiled CPU kernel (built at install with a C "
               "compiler; MAMBADNA_CPU_CONV=0 turns it off), CPU tensors that are not fp64 and a "
               f"kernel width <= 64, got {x.device} {x.dtype}, width {weight.shape[1]}; use "
               "backend='reference'")
        return cpu.causal_conv1d_compiled(*args)
    if backend == "triton" or (backend == "auto" and x.is_cuda):
        impl = _triton_impl()
        from_triton = impl is not None and weight.shape[1] <= 4
        if from_triton:
            return impl(*args)
        _check(backend != "triton", op,
               "backend='triton' needs Triton installed and a kernel width <= 4, got width "
               f"{weight.shape[1]}; use backend='reference'")
        global _fallback_logged
        if impl is None and not _fallback_logged:
            _log.warning("Triton is not available: causal_conv1d runs F.conv1d on CUDA")
            _fallback_logged = True
    return causal_conv1d_reference(*args)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    """One position of ``causal_conv1d``: x (batch, dim), conv_state (batch, dim, W-1).

    Returns (out (batch, dim) in x's dtype, new_state (batch, dim, W-1) in conv_state's dtype).
    The state is not modified in place.
    """
    op = "causal_conv1d_update"
    _check(isinstance(x, torch.Tensor) and x.dim() == 2, op,
           f"x must be a (batch, dim) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    _check(isinstance(conv_state, torch.Tensor), op, "conv_state must be a torch.Tensor")
    _validate_common(op, x, weight, bias, conv_state, "conv_state", activation)
    window = torch.cat([conv_state.to(x.dtype), x[..., None]], dim=-1)  # (batch, dim, W)
    out = (window * weight.to(x.dtype)).sum(-1)
    if bias is not None:
        out = out + bias.to(x.dtype)
    return _activate(out, activation), window[..., 1:].to(conv_state.dtype)
