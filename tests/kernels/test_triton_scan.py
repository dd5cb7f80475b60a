"""The Triton selective scan against the per-position definition, run by Triton's interpreter.

TRITON_INTERPRET=1 must be set before Triton is imported, and other tests import Triton in
this process, so the kernels run in one subprocess (this file run as a script with --worker),
which prints one JSON result per case; each parametrized test checks its case. Outputs start
as NaN (the launcher's test hook), so any element that no kernel writes fails.

The same cases (and larger ones) run compiled on a GPU in test_triton_scan_gpu.py, which
imports ``CASES`` and ``run_case`` from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# (batch, dim, L, N): tiny, odd lengths, lengths not a multiple of the 4- or 8-position tile or
# of the chunk; "segments" forces the forward's L-split (the backward cuts its own unless
# config's bwd_segments forces it), "chunk" the checkpoint spacing.
CASES = [
    dict(id="fp32-odd-L-one-segment", batch=2, dim=5, L=37, N=4, segments=1, chunk=16),
    dict(id="fp32-split-3-segments-final-grad", batch=2, dim=5, L=70, N=4, segments=3,
         chunk=16, final_grad=True, config=dict(bwd_segments=2)),
    dict(id="bf16-split", batch=1, dim=6, L=45, N=4, dtype="bfloat16", segments=2, chunk=16,
         final_grad=True),
    dict(id="fp32-groups", batch=2, dim=6, L=33, N=4, groups=2, segments=2, chunk=16,
         config=dict(bwd_prefetch=False)),
    dict(id="fp32-plain-no-options", batch=1, dim=3, L=19, N=8, segments=2, chunk=8,
         D=False, z=False, bias=False, softplus=False, init=False),
    dict(id="fp16-io-fp32-BC", batch=1, dim=4, L=24, N=4, dtype="float16", bc_dtype="float32",
         segments=3, chunk=8, final_grad=True),
    dict(id="fp32-L1", batch=2, dim=3, L=1, N=4, segments=1, chunk=16, final_grad=True),
    # more segments than the chains load per step (16): two steps each way
    dict(id="fp32-20-segments-two-chain-steps", batch=1, dim=3, L=300, N=4, segments=20,
         chunk=8, final_grad=True, config=dict(bwd_segments=19, tile=8)),
    dict(id="fp32-two-channel-tiles", batch=1, dim=40, L=20, N=4, segments=2, chunk=8,
         z=False),
    # float column picks everywhere (the picks' other form), groups over two channel tiles
    dict(id="fp32-float-picks-two-channel-tiles", batch=2, dim=40, L=27, N=4, groups=2,
         segments=2, chunk=8, final_grad=True, config=dict(bit_picks=False, tile=8)),
    dict(id="bf16-N16-chunk-equals-tile", batch=1, dim=2, L=29, N=16, dtype="bfloat16",
         segments=4, chunk=8, bias=False, config=dict(bwd_segments=3)),
    # the 4-position tiles (default 8), software pipelining; two-warp programs
    dict(id="fp32-tile-4-one-stage", batch=1, dim=40, L=21, N=4, segments=2, chunk=8,
         final_grad=True, config=dict(tile=4, stages=1, fwd_warps=1)),
    dict(id="fp32-two-warps-pipelined-states", batch=1, dim=70, L=22, N=4, segments=2,
         chunk=8, final_grad=True, config=dict(fwd_warps=2, bwd_warps=2, bwd_stages=3)),
    # summary passes with channel tiles of their own (wider, narrower than their pass's)
    dict(id="fp32-summary-channel-tiles-of-their-own", batch=2, dim=70, L=40, N=4, segments=3,
         chunk=8, final_grad=True,
         config=dict(fwd_warps=1, fwd_summary_warps=2, bwd_summary_warps=2, bwd_segments=3)),
    dict(id="bf16-narrow-forward-summary", batch=1, dim=70, L=37, N=4, dtype="bfloat16",
         segments=2, chunk=16, config=dict(fwd_warps=2, fwd_summary_warps=1)),
    # the forward cut in whole units of 4 chunks (fwd_cut), X still saved at every chunk for
    # the backward (5 segments of 32 positions, states every 8)
    dict(id="fp32-forward-cut-in-units-of-chunks", batch=1, dim=5, L=150, N=4, segments=None,
         chunk=8, final_grad=True, config=dict(fwd_cut=32)),
    # the Gluon kernels are the default on CUDA; aligned rows here, so only the interpreter
    # (no Gluon) sends this case to the Triton kernels
    dict(id="bf16-aligned-rows-gluon-default", batch=1, dim=40, L=64, N=4, dtype="bfloat16",
         segments=2, chunk=16, final_grad=True, config=dict(gluon=True)),
]

# Relative errors (norm of the difference over norm of the fp64 reference) allowed.
TOLERANCE = {"float32": (1e-3, 5e-3), "bfloat16": (3e-2, 5e-2), "float16": (3e-2, 5e-2)}


def make_inputs(case: dict, device: str, seed: int = 0) -> dict:
    """Random inputs of a case (fresh values, never zeros), typical Mamba magnitudes."""
    g = torch.Generator().manual_seed(seed)
    b, dim, length, n = case["batch"], case["dim"], case["L"], case["N"]
    dtype = getattr(torch, case.get("dtype", "float32"))
    bc_dtype = getattr(torch, case.get("bc_dtype", case.get("dtype", "float32")))

    def rand(*shape, scale=1.0, shift=0.0, dt=torch.float32):
        return (torch.randn(*shape, generator=g) * scale + shift).to(dt).to(device)

    groups = case.get("groups")
    bc_shape = (b, n, length) if groups is None else (b, groups, n, length)
    x = dict(
        u=rand(b, dim, length, dt=dtype),
        delta=rand(b, dim, length, scale=0.5, shift=-1.0, dt=dtype),
        A=-(torch.rand(dim, n, generator=g) * 2 + 0.1).to(device),
        B=rand(*bc_shape, dt=bc_dtype),
        C=rand(*bc_shape, dt=bc_dtype),
        D=rand(dim) if case.get("D", True) else None,
        z=rand(b, dim, length, dt=dtype) if case.get("z", True) else None,
        delta_bias=rand(dim, scale=0.3) if case.get("bias", True) else None,
        delta_softplus=case.get("softplus", True),
        initial_state=rand(b, dim, n) if case.get("init", True) else None,
    )
    if not x["delta_softplus"]:  # dt must stay positive without softplus
        x["delta"] = (torch.rand(b, dim, length, generator=g) * 0.2 + 0.01).to(dtype).to(device)
    return x


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double(), ref.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def case_config(case: dict, min_chunk: int | None = None):
    """The case's ScanConfig: its chunk and forced segments, and its own changes."""
    from mambadna.kernels import ScanConfig

    return ScanConfig(chunk=case["chunk"], min_chunk=min_chunk or case["chunk"],
                      segments=case["segments"], **case.get("config", {}))


def run_case(case: dict, device: str, seed: int = 0, config=None) -> dict:
    """Forward + backward by the Triton kernels and by the fp64 definition; relative errors.
    ``config``: passed to every Triton call (None: the ``scan_config`` block's)."""
    from mambadna.kernels import selective_scan

    x = make_inputs(case, device, seed)
    tensors = [k for k, v in x.items() if isinstance(v, torch.Tensor)]
    ours = {k: (x[k].clone().requires_grad_(True) if k in tensors else x[k]) for k in x}
    ref = {k: (x[k].detach().double().requires_grad_(True) if k in tensors else x[k])
           for k in x}
    out, final = selective_scan(**ours, return_final_state=True, backend="triton",
                                config=config)
    # Without a gradient to come the forward skips the chunk states' stores (only segment
    # starts are written; X starts NaN-poisoned): the same out and final state, bit for bit.
    with torch.no_grad():
        out_ng, final_ng = selective_scan(**ours, return_final_state=True, backend="triton",
                                          config=config)
    # The loop definition on fp64 copies (the CPU chunked form for large GPU cases).
    backend = "loop" if case["L"] * case["dim"] * case["batch"] <= 4096 else "reference"
    rout, rfinal = selective_scan(**ref, return_final_state=True, backend=backend)
    gen = torch.Generator().manual_seed(seed + 1)
    dout = torch.randn(out.shape, generator=gen).to(out.device)
    loss = (out.float() * dout).sum()
    rloss = (rout * dout.double()).sum()
    if case.get("final_grad"):
        dfin = torch.randn(final.shape, generator=gen).to(out.device)
        loss = loss + (final * dfin).sum()
        rloss = rloss + (rfinal * dfin.double()).sum()
    loss.backward()
    rloss.backward()
    result = {"out": _rel(out, rout), "final_state": _rel(final, rfinal),
              "out_dtype_ok": out.dtype == x["u"].dtype and out.shape == x["u"].shape,
              "no_grad_same_ok": bool(torch.equal(out_ng, out.detach())
                                      and torch.equal(final_ng, final.detach()))}
    for k in tensors:
        grad = ours[k].grad
        result["d" + k] = float("inf") if grad is None else _rel(grad, ref[k].grad)
        result["d" + k + "_dtype_ok"] = grad is not None and grad.dtype == x[k].dtype
    return result


def check(case: dict, result: dict) -> None:
    out_tol, grad_tol = TOLERANCE[case.get("dtype", "float32")]
    assert "error" not in result, result.get("error")
    assert result["out"] < out_tol, result
    assert result["final_state"] < out_tol, result
    assert result["out_dtype_ok"]
    assert result["no_grad_same_ok"], "the forward without gradients differs"
    bad = {k: v for k, v in result.items()
           if k.startswith("d") and not k.endswith("_ok") and not v < grad_tol}
    assert not bad, f"gradients off: {bad}"
    assert all(v for k, v in result.items() if k.endswith("_dtype_ok")), result


# ----------------------------------------------------------------------------- subprocess


def _worker() -> None:
    """Run every case under the interpreter; one JSON line per case on stdout. The case's
    configuration reaches the kernels as the calls' argument (even cases) or through a
    ``scan_config`` block (odd cases): both ways are checked."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    from mambadna.kernels import scan_config
    from mambadna.kernels.launch import set_poison_outputs

    set_poison_outputs(True)
    for i, case in enumerate(CASES):
        try:
            if i % 2 == 0:
                result = run_case(case, "cpu", config=case_config(case))
            else:
                with scan_config(case_config(case)):
                    result = run_case(case, "cpu")
        except Exception as exc:  # reported per case by the parent test
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps({"id": case["id"], **result}), flush=True)


@pytest.fixture(scope="module")
def interpreted_results() -> dict:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONWARNINGS="ignore")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, __file__, "--worker"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=900)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            results[item.pop("id")] = item
    if not results:
        pytest.fail(f"interpreter worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return results


@pytest.mark.slow  # one interpreter process runs every case: ~45 s on 2 cores
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_interpreted_kernels_match_definition(case, interpreted_results):
    assert case["id"] in interpreted_results, "the worker stopped before this case"
    check(case, interpreted_results[case["id"]])


def _without_interpreter(code: str) -> str:
    """Run ``code`` in a fresh Python with the interpreter off (it is read when Triton is
    imported, so it cannot be turned off in this process); returns its stdout."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error():
    out = _without_interpreter(
        "import sys; sys.path.insert(0, 'tests/kernels')\n"
        "from test_triton_scan import CASES, make_inputs\n"
        "from mambadna.kernels import selective_scan\n"
        "try:\n"
        "    selective_scan(**make_inputs(CASES[0], 'cpu'), backend='triton')\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n")
    assert "TRITON_INTERPRET=1" in out


def test_fp64_inputs_use_the_reference():
    """The kernels have no fp64 path: fp64 inputs are answered by the (exact) reference."""
    pytest.importorskip("triton")
    from mambadna.kernels.selective_scan.triton import selective_scan_triton

    x = {k: (v.double() if isinstance(v, torch.Tensor) else v)
         for k, v in make_inputs(CASES[0], "cpu").items()}
    from mambadna.kernels import selective_scan

    expected = selective_scan(**x, backend="loop")
    got = selective_scan_triton(*(x[k] for k in ("u", "delta", "A", "B", "C", "D", "z",
                                                  "delta_bias", "delta_softplus",
                                                  "initial_state")), False)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker()


def test_occupancy_follows_cuda_rules():
    """Programs per SM from registers (per-warp units of 256 from each sub-partition's 16 384),
    warps (64) and shared memory; the figures the H200 runs of kernels/README.md rely on."""
    pytest.importorskip("triton")
    from mambadna.kernels.launch import resident_programs

    assert resident_programs(168, 1) == 12  # backward: 168 registers, 1-warp programs
    assert resident_programs(128, 1) == 16
    assert resident_programs(152, 2) == 6  # forward output pass, 2-warp programs
    assert resident_programs(32, 1) == 32  # at most 32 programs
    assert resident_programs(32, 4) == 16  # at most 64 warps
    assert resident_programs(64, 1, shared_bytes=100 * 1024) == 2


def test_segments_fill_the_gpu_in_whole_turns():
    """The forward and the backward cut L so that their items fill the resident programs in
    whole turns."""
    pytest.importorskip("triton")
    from mambadna.kernels.selective_scan.triton import _chunks_per_segment

    def cut(*args, forced=None, weight=0.25):
        return _chunks_per_segment(*args, weight, forced)

    # (1, 1024, 65536): 256 chunks, 32 channel tiles, 12 x 132 resident: 43 segments of 6
    # chunks, one turn (1376 items); 52 segments of 5 would need a second turn.
    assert cut(256, 32, 1584, 2640) == 6
    for n_chunks, n_bt, slots in [(4096, 32, 1584), (16, 256, 1584), (7, 3, 64), (1, 1, 8)]:
        cps = cut(n_chunks, n_bt, slots, 2 * slots)
        n_seg = -(-n_chunks // cps)
        turns = -(-n_seg * n_bt // slots)
        # no cut with the same number of turns has shorter items
        shorter = -(-n_chunks // (cps - 1)) if cps > 1 else None
        assert shorter is None or -(-shorter * n_bt // slots) > turns or shorter == n_seg
    assert cut(70, 2, 32, 64, forced=3) == 24  # forced: 3 segments of 24 chunks
    # The forward at (1, 1024, 2^20): 4096 chunks, 16 two-warp channel tiles, 8 x 132 output
    # and 10 x 132 summary programs resident. 128 segments of 32 chunks (the programs-per-SM
    # rule) leave the summary's second turn half empty; 456 of 9 fill 7 and 6 turns (95 % of
    # the time by the model).
    assert cut(4096, 16, 1056, 1320, weight=0.55) == 9


def test_bc_tile_major_round_trip():
    """B / C into the kernels' tile-major fp32 layout and the gradients back: one strided copy
    each way, zero padding past L, every length (whole tiles, a partial last tile, L < T)."""
    from mambadna.kernels.selective_scan import triton as ts

    g = torch.Generator().manual_seed(3)
    for length, tile, groups in ((64, 8, 2), (37, 8, 1), (45, 4, 1), (3, 8, 2), (1, 4, 1)):
        batch, n = 2, 4
        geo = ts._Geometry(batch, 8, length, n, groups, tile, 32, 1, 16, 1, 1, 1, True)
        shape = (batch, groups, n, length) if groups > 1 else (batch, n, length)
        b = torch.randn(shape, generator=g).to(torch.bfloat16)
        packed = ts._tile_major(b, geo)
        padded = -(-length // tile) * tile
        expected = torch.nn.functional.pad(b.reshape(batch, groups, n, length).float(),
                                           (0, padded - length))
        expected = expected.view(batch, groups, n, padded // tile, tile).transpose(2, 3)
        assert packed.dtype == torch.float32 and packed.is_contiguous()
        assert torch.equal(packed, expected), (length, tile, groups)
        back = ts._from_tile_major(packed, geo, b.shape, b.dtype)
        assert back.dtype == b.dtype and torch.equal(back, b), (length, tile, groups)


@pytest.mark.slow  # compiles for sm_90 in a subprocess: up to a minute with a cold cache
def test_gluon_output_pass_compiles_for_hopper_with_fewer_instructions():
    """The Gluon output pass (the CUDA default on aligned rows; the interpreter cannot run
    it) compiles for sm_90 with the installed Triton: within the 128-register cap, no spill,
    one exp2 per (position, state), and a shorter tile loop than the Triton kernel's (the
    point of copying each tile's B / C block in one piece)."""
    rows = json.loads(_without_interpreter(
        "import json, sys\n"
        "sys.path.insert(0, 'benchmarks')  # benchmarks/sass.py, run from the repository root\n"
        "import sass\n"
        "from mambadna.kernels.selective_scan import triton as triton_scan\n"
        "print(json.dumps([sass.report('forward', triton_scan.ScanConfig(gluon=g), 16)\n"
        "                  for g in (True, False)]))\n"))
    gluon, triton_ = rows
    assert gluon["registers"] <= 128 and gluon["spill_bytes"] == 0, gluon
    assert gluon["loop_mix"]["MUFU"] >= 128
    assert gluon["loop_instructions"] < triton_["loop_instructions"], rows


@pytest.mark.slow  # compiles for sm_90 in a subprocess: up to a minute with a cold cache
def test_sass_report_compiles_for_hopper_without_a_gpu():
    """The development tool that predicts registers before GPU time is spent: the adjoint
    summary compiles for sm_90 here, one exp2 per (position, state) of its tile loop."""
    row = json.loads(_without_interpreter(
        "import json, sys\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "import sass\n"
        "from mambadna.kernels.selective_scan import triton as triton_scan\n"
        "print(json.dumps(sass.report('backward-summary', triton_scan.ScanConfig(), 16)))\n"))
    assert 32 <= row["registers"] <= 255
    assert row["resident_per_sm"] >= 1
    # 8 positions x 16 states of exp2 per tile, plus the tile's softplus and sigmoid
    assert row["loop_mix"]["MUFU"] >= 128
