"""The selective scan's compiled CPU path: the C kernel's launcher and autograd function.

The whole scan of a row (bias, softplus, the recurrence, the D skip, the SiLU gate; see
``_cpu_scan.c``) runs in C with the row's state in registers, the rows split across threads.
The chunked PyTorch scan (``naive.py``) stays the reference and the fallback: ``available()`` is
False where the extension was not built (no C compiler at install) or MAMBADNA_CPU_SCAN=0, and
fp64 inputs (gradcheck) always take the reference.

Layouts handed to C (all fp32, contiguous): u, delta, z: (batch * dim, L) rows; A: (dim, N);
B, C: (batch, groups, L, N) (positions outer, states inner, so a position's N values are one
vector); D, bias: (dim,); x0: (batch * dim, N).
"""

from __future__ import annotations

import os

import torch

from mambadna.kernels.launch import address as _address
from mambadna.kernels.launch import row_ranges
from mambadna.kernels.launch import run_rows as _launch

try:
    import mambadna.kernels.selective_scan._cpu_scan as _cpu_scan
except ImportError:  # built at install when a C compiler is present (setup.py)
    _cpu_scan = None

__all__ = ["available", "selective_scan_compiled"]

# Below this many (row, position) pairs a second thread costs more than it saves.
_MIN_WORK_PER_THREAD = 1 << 15


def available() -> bool:
    """Whether the compiled kernel was built and can run here."""
    return _cpu_scan is not None and os.environ.get("MAMBADNA_CPU_SCAN", "1") != "0"


def max_state() -> int:
    """The largest state size N the compiled kernel takes (larger N uses the reference)."""
    return 0 if _cpu_scan is None else _cpu_scan.MAX_STATE


def _row_ranges(rows: int, length: int) -> list[tuple[int, int]]:
    return row_ranges(rows, length, _MIN_WORK_PER_THREAD)


class _CompiledScan(torch.autograd.Function):
    """The fused scan; saves its inputs and each 64-position chunk's start state."""

    @staticmethod
    def forward(ctx, u, delta, z, A, B, C, D, bias, x0, groups: int, softplus: bool,
                save: bool):
        rows, length = u.shape
        dim, n_state = A.shape
        out = torch.empty_like(u)
        last = torch.empty_like(x0)
        chunks = -(-length // _cpu_scan.CHUNK)
        starts = u.new_empty(rows, chunks, n_state) if save else None
        inputs = [_address(t) for t in (u, delta, z, A, B, C, D, bias, x0)]
        outputs = [out.data_ptr(), last.data_ptr(), _address(starts)]
        sizes = (dim, groups, length, n_state, int(softplus))
        _launch(_cpu_scan.forward, lambda k: inputs + outputs + list(sizes),
                _row_ranges(rows, length))
        if save:
            ctx.save_for_backward(u, delta, z, A, B, C, D, bias, starts)
            ctx.sizes = sizes
        return out, last

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, z, A, B, C, D, bias, starts = ctx.saved_tensors
        rows, length = u.shape
        n_state = A.shape[1]
        g_out = torch.zeros_like(u) if g_out is None else g_out.float().contiguous()
        g_last = (u.new_zeros(rows, n_state) if g_last is None
                  else g_last.float().contiguous())
        ranges = _row_ranges(rows, length)
        d_u, d_delta, d_x0 = torch.empty_like(u), torch.empty_like(u), torch.empty_like(g_last)
        d_z = None if z is None else torch.empty_like(z)
        # Sums over rows: one buffer per thread, added afterwards (no atomics, deterministic).
        sums = [t.new_zeros((len(ranges), *t.shape)) for t in (A, B, C, D, bias)]
        inputs = [_address(t) for t in (u, delta, z, A, B, C, D, bias)]
        shared = [starts.data_ptr(), g_out.data_ptr(), g_last.data_ptr(), d_u.data_ptr(),
                  d_delta.data_ptr(), _address(d_z), d_x0.data_ptr()]

        def arguments(k):
            return (inputs + [0] + shared + [t[k].data_ptr() for t in sums]
                    + list(ctx.sizes))

        _launch(_cpu_scan.backward, arguments, ranges)
        d_A, d_B, d_C, d_D, d_bias = (t.sum(0) for t in sums)
        return d_u, d_delta, d_z, d_A, d_B, d_C, d_D, d_bias, d_x0, None, None, None


def selective_scan_compiled(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False,
):
    """The selective scan on CPU through the compiled kernel (arguments as ``selective_scan``).

    Needs ``available()``, fp32/bf16/fp16 inputs and N <= ``max_state()``; the public function
    checks these and otherwise takes the chunked reference.
    """
    batch, dim, length = u.shape
    n_state = A.shape[1]
    groups = 1 if B.dim() == 3 else B.shape[1]

    def rows(t):
        return None if t is None else t.float().reshape(batch * dim, length).contiguous()

    def positions_outer(t):  # (batch, [G,] N, L) -> (batch, G, L, N)
        return t.float().reshape(batch, groups, n_state, length).transpose(-1, -2).contiguous()

    zeros = u.new_zeros(dim, dtype=torch.float32)
    x0 = (u.new_zeros(batch * dim, n_state, dtype=torch.float32) if initial_state is None
          else initial_state.float().reshape(batch * dim, n_state).contiguous())
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    out, last = _CompiledScan.apply(
        rows(u), rows(delta), rows(z), A.float().contiguous(), positions_outer(B),
        positions_outer(C), zeros if D is None else D.float().contiguous(),
        zeros if delta_bias is None else delta_bias.float().contiguous(), x0, groups,
        bool(delta_softplus), save)
    out = out.reshape(batch, dim, length).to(u.dtype)
    if return_final_state:
        return out, last.reshape(batch, dim, n_state)
    return out
