"""Causal depthwise convolution with a carried state (Mamba's short convolution) as an op.

- ``ops.py``: the reference (``F.conv1d`` over the state prepended to x), the validated public
  ``causal_conv1d`` and its one-position form ``causal_conv1d_update``.
- ``triton.py``: the Triton kernels (widths up to 4, SiLU fused, state in and out) and their
  autograd Function, used for CUDA tensors.
- ``cpu.py`` and ``_cpu_conv.c``: the compiled C kernel (the same fusion) and its autograd
  Function, used for CPU tensors where it was built.
"""

from mambadna.kernels.conv1d.ops import (
    causal_conv1d,
    causal_conv1d_reference,
    causal_conv1d_update,
)

__all__ = ["causal_conv1d", "causal_conv1d_reference", "causal_conv1d_update"]
