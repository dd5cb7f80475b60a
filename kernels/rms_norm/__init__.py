"""RMSNorm with the residual add fused (the pre-norm block's ``residual += x; norm(residual)``).

- ``ops.py``: the reference (fp32 PyTorch ops) and the validated public ``rms_norm``.
- ``triton.py``: one Triton kernel each way and the autograd Function (CUDA tensors).
"""

from mambadna.kernels.rms_norm.ops import rms_norm, rms_norm_reference

__all__ = ["rms_norm", "rms_norm_reference"]
