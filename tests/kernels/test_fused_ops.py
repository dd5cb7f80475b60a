"""The Triton causal conv1d (SiLU fused) and the fused residual-add + RMSNorm against their
PyTorch references, values and every gradient, run by Triton's interpreter.

TRITON_INTERPRET=1 must be set before Triton is imported, and other tests import Triton in this
process, so the cases run in one subprocess (this file run as a script with --worker), which
prints one JSON line per case; each parametrized test checks its case. Outputs start as NaN
(the launcher's test hook), so an element that no kernel writes fails. The same checks run
compiled on a GPU in test_fused_ops_gpu.py, which imports ``run_case`` from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CONV_CASES = [
    dict(id="conv-w4-silu-state", width=4, L=37, state=True, act="silu"),
    dict(id="conv-w4-plain", width=4, L=5, state=False, act=None),
    dict(id="conv-w3-silu-state", width=3, L=20, state=True, act="silu"),
    dict(id="conv-w2-L1-state", width=2, L=1, state=True, act="silu"),
    dict(id="conv-w1-silu", width=1, L=9, state=True, act="silu"),
    dict(id="conv-w4-L2-shorter-than-state", width=4, L=2, state=True, act="silu"),
    dict(id="conv-w4-bf16", width=4, L=45, state=True, act="silu", dtype="bfloat16"),
    dict(id="conv-w4-no-bias", width=4, L=30, state=False, act="silu", bias=False),
]
NORM_CASES = [
    dict(id="norm-residual", rows=(3, 5), n=24, residual=True),
    dict(id="norm-no-residual-fp32-x", rows=(7,), n=16, residual=False),
    dict(id="norm-bf16-x-bf16-out", rows=(2, 9), n=32, residual=True, dtype="bfloat16",
         out="bfloat16"),
    dict(id="norm-width-not-power-of-2", rows=(4, 3), n=20, residual=True, dtype="bfloat16"),
]
CASES = CONV_CASES + NORM_CASES

# One interpreter process runs every case: ~10 s of CPU, 30 s on the loaded 2-core machine.
pytestmark = pytest.mark.slow


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _conv_case(case: dict, device: str) -> dict:
    from mambadna.kernels import causal_conv1d

    g = torch.Generator().manual_seed(sum(map(ord, case["id"])))
    dtype = getattr(torch, case.get("dtype", "float32"))
    batch, dim, width, length = 2, 6, case["width"], case["L"]

    def rnd(*shape, dt=torch.float32):
        return torch.randn(*shape, generator=g).to(dt).to(device)

    xz = rnd(batch, 2 * dim, length, dt=dtype)  # x is a channel slice, as in the mixer
    w = rnd(dim, width).requires_grad_()
    b = rnd(dim).requires_grad_() if case.get("bias", True) else None
    s = rnd(batch, dim, width - 1, dt=dtype).requires_grad_() if case["state"] else None
    dout, dfinal = rnd(batch, dim, length, dt=dtype), rnd(batch, dim, width - 1, dt=dtype)
    results = {}
    for backend in ("triton", "reference"):
        x = xz.detach().requires_grad_()
        out, final = causal_conv1d(x[:, :dim], w, b, s, True, case["act"], backend=backend)
        inputs = [t for t in (x, w, b, s) if t is not None]
        outs, grads = [out], [dout]
        if width > 1:
            outs, grads = [out, final], [dout, dfinal]
        results[backend] = (out, final, torch.autograd.grad(outs, inputs, grads,
                                                            allow_unused=True))
    (o1, f1, g1), (o2, f2, g2) = results["triton"], results["reference"]
    errors = dict(out=_rel(o1, o2), final=_rel(f1, f2))
    for name, a, c in zip(("x", "w", "b", "s"), g1, g2):
        errors["d" + name] = _rel(a, c)
    return dict(errors=errors, nan=bool(torch.isnan(o1).any()))


def _norm_case(case: dict, device: str) -> dict:
    from mambadna.kernels import rms_norm

    g = torch.Generator().manual_seed(sum(map(ord, case["id"])))
    dtype = getattr(torch, case.get("dtype", "float32"))
    out_dtype = getattr(torch, case["out"]) if "out" in case else None
    shape = (*case["rows"], case["n"])
    x0 = torch.randn(*shape, generator=g).to(dtype).to(device)
    r0 = torch.randn(*shape, generator=g).to(device) if case["residual"] else None
    w0 = (1 + 0.1 * torch.randn(case["n"], generator=g)).to(device)
    dout = torch.randn(*shape, generator=g).to(device)
    dnext = torch.randn(*shape, generator=g).to(device)
    results = {}
    for backend in ("triton", "reference"):
        x, w = x0.detach().requires_grad_(), w0.detach().requires_grad_()
        r = None if r0 is None else r0.detach().requires_grad_()
        out, stream = rms_norm(x, w, r, 1e-5, out_dtype, backend=backend)
        inputs = [t for t in (x, w, r) if t is not None]
        grads = torch.autograd.grad([out, stream], inputs,
                                    [dout.to(out.dtype), dnext.to(stream.dtype)])
        results[backend] = (out, stream, grads)
    (o1, s1, g1), (o2, s2, g2) = results["triton"], results["reference"]
    errors = dict(out=_rel(o1, o2), stream=_rel(s1, s2))
    for name, a, c in zip(("x", "w", "residual"), g1, g2):
        errors["d" + name] = _rel(a, c)
    return dict(errors=errors, nan=bool(torch.isnan(o1).any()),
                dtypes=[str(o1.dtype), str(s1.dtype)])


def _streaming_case(device: str) -> dict:
    """The Triton conv over pieces with the state carried equals it over the whole."""
    from mambadna.kernels import causal_conv1d

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 23, generator=g).to(device)
    w, b = torch.randn(4, 4, generator=g).to(device), torch.randn(4, generator=g).to(device)
    whole, whole_state = causal_conv1d(x, w, b, None, True, "silu", backend="triton")
    state, pieces = None, []
    for lo, hi in ((0, 1), (1, 3), (3, 11), (11, 23)):
        out, state = causal_conv1d(x[..., lo:hi], w, b, state, True, "silu", backend="triton")
        pieces.append(out)
    return dict(out=float((torch.cat(pieces, -1) - whole).abs().max()),
                state=float((state - whole_state).abs().max()))


def run_case(case: dict, device: str = "cpu") -> dict:
    if case["id"] == "streaming":
        return _streaming_case(device)
    return (_conv_case if case["id"].startswith("conv") else _norm_case)(case, device)


def _worker() -> None:
    from mambadna.kernels.launch import set_poison_outputs

    set_poison_outputs(True)
    for case in [*CASES, dict(id="streaming")]:
        try:
            row = run_case(case)
        except Exception as err:  # the test names the failing case
            row = dict(error=f"{type(err).__name__}: {err}")
        print(json.dumps(dict(id=case["id"], **row)), flush=True)


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, __file__, "--worker"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["id"]] = row
    assert rows, f"the worker printed nothing:\n{proc.stderr[-3000:]}"
    return rows


def tolerance(case: dict) -> float:
    return 2e-2 if case.get("dtype") == "bfloat16" or case.get("out") == "bfloat16" else 1e-5


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_kernel_matches_reference(results, case):
    row = results[case["id"]]
    assert "error" not in row, row.get("error")
    assert not row["nan"], "an output element was never written"
    tol = tolerance(case)
    for name, err in row["errors"].items():
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def test_norm_keeps_the_stream_fp32(results):
    assert results["norm-bf16-x-bf16-out"]["dtypes"] == ["torch.bfloat16", "torch.float32"]


def test_conv_streams_exactly(results):
    row = results["streaming"]
    assert "error" not in row, row.get("error")
    assert row["out"] < 1e-5 and row["state"] == 0.0


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker()
