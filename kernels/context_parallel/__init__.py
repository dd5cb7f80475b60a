"""Context parallelism as an op: one sequence split along its length over a process group.

- ``carry.py``: the carry combination on one process (the math, the reference): a segment's
  affine map of the state, the prefix over ranks and its reverse pass.
- ``ops.py``: ``context_parallel_scan`` and ``context_parallel_conv1d`` (the distributed
  selective scan and causal convolution, exact in values and gradients), their autograd
  functions (``_CarryExchange``, ``_Halo``), ``context_sum`` (a differentiable sum over the
  ranks) and ``ContextGroup`` / ``context_groups``.

The design and its math are in docs/kernels.md ("Context parallelism").
"""

from mambadna.kernels.context_parallel.carry import (
    combine_carries,
    combine_carry_grads,
    segment_log_decay,
)
from mambadna.kernels.context_parallel.ops import (
    ContextGroup,
    broadcast_from,
    context_groups,
    context_parallel_conv1d,
    context_parallel_scan,
    context_sum,
    gather_segments,
)

__all__ = ["ContextGroup", "broadcast_from", "combine_carries", "combine_carry_grads",
           "context_groups", "context_parallel_conv1d", "context_parallel_scan", "context_sum",
           "gather_segments", "segment_log_decay"]
