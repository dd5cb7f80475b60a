"""Hardware-aware ops, imported as ``mambadna.kernels`` (see kernels/README.md).

One folder per op, each with its PyTorch reference, its kernels (if any), its autograd function
and one validated public function:

- ``selective_scan/``: ``selective_scan`` (Triton kernels on CUDA tensors, the chunked PyTorch
  reference on CPU) and ``selective_state_update`` (one position, for streaming and generation);
  ``ScanConfig`` / ``scan_config`` choose the kernels' tiling per call or per ``with`` block.
- ``launch.py``: launch and configuration code shared by the ops' kernels.
- ``conv1d/``: ``causal_conv1d`` / ``causal_conv1d_update``, depthwise causal convolution with
  state (Triton kernels with SiLU fused on CUDA).
- ``rms_norm/``: ``rms_norm``, RMSNorm with the residual add fused (Triton kernels on CUDA).

This package imports nothing from the rest of mambadna, so it can be vendored or tested alone.
"""

from __future__ import annotations

from mambadna.kernels.conv1d import causal_conv1d, causal_conv1d_update
from mambadna.kernels.rms_norm import rms_norm

# ``selective_scan`` names the function here (bound after the import system set the name to the
# folder's package): import the folder's modules by their full path.
from mambadna.kernels.selective_scan import (
    BACKENDS,
    TUNED,
    ScanConfig,
    scan_config,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
    selective_state_update,
)

__all__ = ["BACKENDS", "TUNED", "ScanConfig", "causal_conv1d", "causal_conv1d_update",
           "rms_norm", "scan_config", "selective_scan", "selective_scan_chunked",
           "selective_scan_reference", "selective_state_update"]
