"""The selective scan (Mamba's S6) as an op: reference, Triton and Gluon kernels, autograd
function, and one validated public function.

- ``ops.py``: ``selective_scan``, the public function (validates, dispatches by device/backend).
- ``naive.py``: the per-position definition and the chunked PyTorch scan (ground truth, CPU path).
- ``config.py``: ``ScanConfig`` (the kernels' tiling), the measured-best table ``TUNED`` and
  ``scan_config``, the context manager that sets it for the calls inside a block.
- ``triton.py``: launchers, tiling plan, autograd Function and ``selective_scan_triton``.
- ``kernels.py``: the Triton kernels; ``gluon.py``: the pipelined passes in Gluon (CUDA only).
- ``step.py``: ``selective_state_update``, one position of the scan (streaming, generation).

``mambadna.kernels.selective_scan`` is the function (``mambadna.kernels`` re-exports it), so
import this folder's modules with ``from``: ``from mambadna.kernels.selective_scan import naive``
or ``from mambadna.kernels.selective_scan.config import TUNED, ScanConfig, get_config, scan_config
from mambadna.kernels.selective_scan.naive import selective_scan_chunked``. (``import
mambadna.kernels.selective_scan.naive as naive`` fails: that form looks the folder up as an
attribute of ``mambadna.kernels`` and finds the function.)
Nothing here imports Triton until a CUDA tensor (or ``backend="triton"``) needs the kernels.
"""

from mambadna.kernels.selective_scan.config import TUNED, ScanConfig, get_config, scan_config
from mambadna.kernels.selective_scan.naive import selective_scan_chunked, selective_scan_reference
from mambadna.kernels.selective_scan.ops import BACKENDS, selective_scan
from mambadna.kernels.selective_scan.step import (
    selective_state_update,
    selective_state_update_reference,
)

__all__ = ["BACKENDS", "TUNED", "ScanConfig", "get_config", "scan_config", "selective_scan",
           "selective_scan_chunked", "selective_scan_reference", "selective_state_update",
           "selective_state_update_reference"]
