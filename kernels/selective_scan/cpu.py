"""The selective scan's compiled CPU path: the C kernel, its autograd function and its launcher.

The recurrence core (decay, input, readout; see ``_cpu_scan.c``) runs in C with each row's state
in registers and the rows split across threads; the parts around it (delta bias, softplus, the D
skip, the SiLU gate, dtype handling) are the same PyTorch code as the chunked reference, so
autograd covers them. The chunked PyTorch scan (``naive.py``) stays the reference and the
fallback: ``available()`` is False where the extension was not built (no C compiler at install),
and fp64 inputs (gradcheck) always take the reference.

Layouts handed to C (all fp32, contiguous): dt, dtu = dt * u: (batch * dim, L); A: (dim, N);
B, C: (batch, groups, L, N) (positions outer, states inner, so a position's N values are one
vector); x0: (batch * dim, N).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

from mambadna.kernels.selective_scan.naive import _finish, _prepare

try:
    from mambadna.kernels.selective_scan import _cpu_scan
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


@lru_cache(maxsize=8)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mambadna-scan")


def _row_ranges(rows: int, length: int) -> list[tuple[int, int]]:
    """Contiguous row ranges, one per thread (torch's intra-op thread count, as for its ops)."""
    threads = max(1, min(torch.get_num_threads(), rows, rows * length // _MIN_WORK_PER_THREAD))
    bounds = [rows * k // threads for k in range(threads + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _launch(kernel, pointers, shape, ranges) -> None:
    """Run ``kernel`` over the row ranges in parallel (the C code releases the GIL)."""
    if len(ranges) == 1:
        kernel(*pointers(0), *ranges[0], *shape)
        return
    futures = [_pool(len(ranges)).submit(kernel, *pointers(k), *r, *shape)
               for k, r in enumerate(ranges)]
    for future in futures:
        future.result()


class _CompiledScan(torch.autograd.Function):
    """The recurrence core; saves each 64-position chunk's start state for the backward."""

    @staticmethod
    def forward(ctx, dt, dtu, A, B, C, x0, groups: int, save: bool):
        rows, length = dt.shape
        dim, n_state = A.shape
        chunks = -(-length // _cpu_scan.CHUNK)
        y = torch.empty_like(dt)
        last = torch.empty_like(x0)
        starts = dt.new_empty(rows, chunks, n_state) if save else None
        shape = (dim, groups, length, n_state)
        ranges = _row_ranges(rows, length)
        addresses = [t.data_ptr() for t in (dt, dtu, A, B, C, x0, y, last)]
        addresses.append(0 if starts is None else starts.data_ptr())
        _launch(_cpu_scan.forward, lambda k: addresses, shape, ranges)
        if save:
            ctx.save_for_backward(dt, dtu, A, B, C, starts)
            ctx.groups = groups
        return y, last

    @staticmethod
    def backward(ctx, gy, g_last):
        dt, dtu, A, B, C, starts = ctx.saved_tensors
        rows, length = dt.shape
        dim, n_state = A.shape
        gy = torch.zeros_like(dt) if gy is None else gy.contiguous().float()
        g_last = (dt.new_zeros(rows, n_state) if g_last is None
                  else g_last.contiguous().float())
        ranges = _row_ranges(rows, length)
        d_dt, d_dtu, d_x0 = torch.empty_like(dt), torch.empty_like(dt), torch.empty_like(g_last)
        # Sums over rows: one buffer per thread, added afterwards (no atomics, deterministic).
        d_A = A.new_zeros((len(ranges),) + tuple(A.shape))
        d_B = B.new_zeros((len(ranges),) + tuple(B.shape))
        d_C = C.new_zeros((len(ranges),) + tuple(C.shape))
        shared = [t.data_ptr() for t in (dt, dtu, A, B, C, starts, gy, g_last, d_dt, d_dtu)]

        def pointers(k):
            return shared + [d_A[k].data_ptr(), d_B[k].data_ptr(), d_C[k].data_ptr(),
                             d_x0.data_ptr()]

        _launch(_cpu_scan.backward, pointers, (dim, ctx.groups, length, n_state), ranges)
        return d_dt, d_dtu, d_A.sum(0), d_B.sum(0), d_C.sum(0), d_x0, None, None


def selective_scan_compiled(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False,
):
    """The selective scan on CPU through the compiled kernel (arguments as ``selective_scan``).

    Needs ``available()``, fp32/bf16/fp16 inputs and N <= ``max_state()``; the public function
    checks these and otherwise takes the chunked reference.
    """
    u_, dt, A_, B_, C_, D_, x0 = _prepare(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
    )
    batch, dim, length = u.shape
    groups, n_state = B_.shape[1], A.shape[1]
    # (batch, G, 1, N, L) -> (batch, G, L, N): a position's states are contiguous.
    B_c = B_.squeeze(2).transpose(-1, -2).contiguous()
    C_c = C_.squeeze(2).transpose(-1, -2).contiguous()
    dt_rows = dt.reshape(batch * dim, length).contiguous()
    dtu_rows = (dt * u_).reshape(batch * dim, length).contiguous()
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (u, delta, A, B, C, delta_bias, initial_state))
    y, last = _CompiledScan.apply(
        dt_rows, dtu_rows, A_.reshape(dim, n_state).contiguous(), B_c, C_c,
        x0.reshape(batch * dim, n_state).contiguous(), groups, save)
    out = _finish(y.reshape(u_.shape), u_, D_, z, u.dtype, u.shape)
    if return_final_state:
        return out, last.reshape(batch, dim, n_state)
    return out
