"""The causal conv1d's compiled CPU path: the C kernel's launcher and autograd function.

The convolution of a row (taps, bias, SiLU, the final state) runs in C (``_cpu_conv.c``), read
once from x and written once, rows split across threads. ``causal_conv1d_reference`` (ops.py)
stays the ground truth and the fallback: ``available()`` is False where the extension was not
built (no C compiler at install) or MAMBADNA_CPU_CONV=0, and fp64 inputs (gradcheck) always
take the reference.

Layouts handed to C (fp32): x (batch, dim, L) with unit stride along L and any batch and
channel strides (the mixer's x is a channel slice of in_proj's output, passed without a copy);
weight (dim, W); bias (dim,); states (batch * dim, W-1); out, dx (batch * dim, L).
"""

from __future__ import annotations

import os

import torch

from mambadna.kernels.launch import address, row_ranges, run_rows

try:
    import mambadna.kernels.conv1d._cpu_conv as _cpu_conv
except ImportError:  # built at install when a C compiler is present (setup.py)
    _cpu_conv = None

__all__ = ["applies", "available", "causal_conv1d_compiled"]

# A row's convolution is a few microseconds per thousand positions: below this many (row,
# position) pairs a second thread costs more than it saves.
_MIN_WORK_PER_THREAD = 1 << 16


def available() -> bool:
    """Whether the compiled kernel was built and can run here."""
    return _cpu_conv is not None and os.environ.get("MAMBADNA_CPU_CONV", "1") != "0"


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Inputs the compiled kernel takes: CPU, fp32/bf16/fp16 (fp64 stays on the reference, for
    gradcheck), width up to the kernel's MAX_WIDTH."""
    return (available() and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and weight.dtype != torch.float64 and weight.shape[1] <= _cpu_conv.MAX_WIDTH)


def _rows_of(x: torch.Tensor) -> torch.Tensor:
    """x as fp32 with unit stride along L (no copy when it already is)."""
    x = x.float()
    return x if x.stride(-1) == 1 else x.contiguous()


class _CompiledConv(torch.autograd.Function):
    """Saves its inputs only: the backward recomputes the convolution (as the GPU kernel does)."""

    @staticmethod
    def forward(ctx, x, weight, bias, state, silu: bool):
        batch, dim, length = x.shape
        width = weight.shape[1]
        out = x.new_empty(batch, dim, length)
        final = x.new_empty(batch, dim, width - 1)
        sizes = (dim, length, width, x.stride(0), x.stride(1), int(silu))
        run_rows(_cpu_conv.forward,
                 lambda k: [x.data_ptr(), weight.data_ptr(), address(bias), address(state),
                            out.data_ptr(), final.data_ptr(), *sizes],
                 row_ranges(batch * dim, length, _MIN_WORK_PER_THREAD))
        ctx.save_for_backward(x, weight, bias, state)
        ctx.sizes = sizes
        return out, final

    @staticmethod
    def backward(ctx, g_out, g_final):
        x, weight, bias, state = ctx.saved_tensors
        batch, dim, length = x.shape
        width = weight.shape[1]
        g_out = (x.new_zeros(batch, dim, length) if g_out is None
                 else g_out.float().contiguous())
        g_final = None if g_final is None else g_final.float().contiguous()
        ranges = row_ranges(batch * dim, length, _MIN_WORK_PER_THREAD)
        d_x = x.new_empty(batch, dim, length)
        d_state = None
        if state is not None and ctx.needs_input_grad[3]:
            d_state = x.new_empty(batch, dim, width - 1)
        # Sums over the batch's rows: one buffer per thread, added afterwards.
        d_w = x.new_zeros(len(ranges), dim, width)
        d_b = x.new_zeros(len(ranges), dim)
        run_rows(_cpu_conv.backward,
                 lambda k: [x.data_ptr(), weight.data_ptr(), address(bias), address(state),
                            g_out.data_ptr(), address(g_final), d_x.data_ptr(),
                            address(d_state), d_w[k].data_ptr(), d_b[k].data_ptr(), *ctx.sizes],
                 ranges)
        return (d_x, d_w.sum(0), None if bias is None else d_b.sum(0), d_state, None)


def causal_conv1d_compiled(x, weight, bias=None, initial_state=None, return_final_state=False,
                           activation=None):
    """The causal conv1d on CPU through the compiled kernel (arguments as ``causal_conv1d``,
    already validated; needs ``applies(x, weight)``). Returns x's dtype, as the reference."""
    batch, dim, _ = x.shape
    state = None
    if initial_state is not None:
        state = initial_state.float().reshape(batch, dim, -1).contiguous()
    out, final = _CompiledConv.apply(
        _rows_of(x), weight.float().contiguous(),
        None if bias is None else bias.float().contiguous(), state, activation is not None)
    out = out.to(x.dtype)
    if return_final_state:
        return out, final.to(x.dtype)
    return out
