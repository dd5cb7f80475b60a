"""The compiled Triton selective scan on a CUDA GPU, at sizes the interpreter cannot reach.

Marked ``gpu`` (deselected by default; ``pytest -m gpu`` runs them where CUDA exists). Same
checks as test_triton_scan.py: outputs, final state and every gradient against the fp64
reference, NaN-poisoned outputs, odd lengths, groups, split and unsplit L, bf16 and fp32; plus
offsets past 2^31 elements and the dispatch of ``backend="auto"`` for CUDA tensors.
"""

from __future__ import annotations

import pytest
import torch
from test_triton_scan import CASES, case_config, check, make_inputs, run_case

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GPU_CASES = [
    *[dict(c, id="small-" + c["id"]) for c in CASES],
    dict(id="bf16-2049-default-plan", batch=2, dim=96, L=2049, N=16, dtype="bfloat16",
         segments=None, chunk=256, final_grad=True),
    # the default chunk (64) under the forward's cut in 256-position units
    dict(id="bf16-16384-default-chunks", batch=1, dim=256, L=16384, N=16, dtype="bfloat16",
         segments=None, chunk=64, final_grad=True),
    dict(id="fp32-1000-split", batch=2, dim=64, L=1000, N=16, segments=5, chunk=64),
    dict(id="bf16-4099-split-groups", batch=1, dim=128, L=4099, N=16, dtype="bfloat16",
         groups=4, segments=7, chunk=128, final_grad=True),
    dict(id="fp32-odd-63-N8-plain", batch=3, dim=40, L=63, N=8, segments=2, chunk=64,
         D=False, z=False, bias=False, softplus=False, init=False),
    dict(id="bf16-4096-one-segment", batch=1, dim=64, L=4096, N=16, dtype="bfloat16",
         segments=1, chunk=256),
    dict(id="bf16-4099-tile-8-pipelined", batch=2, dim=96, L=4099, N=16,
         dtype="bfloat16", segments=None, chunk=256, final_grad=True,
         config=dict(tile=8, stages=3)),
    dict(id="bf16-4096-tile-4-one-stage", batch=1, dim=64, L=4096, N=16, dtype="bfloat16",
         segments=3, chunk=256, config=dict(tile=4, stages=1, fwd_warps=1)),
    dict(id="fp32-3000-four-warps", batch=1, dim=200, L=3000, N=16, segments=3, chunk=128,
         config=dict(fwd_warps=4, bwd_warps=4)),
    dict(id="bf16-8192-backward-cut-apart-from-forward", batch=1, dim=128, L=8192, N=16,
         dtype="bfloat16", segments=5, chunk=256, final_grad=True,
         config=dict(bwd_segments=3)),
    dict(id="bf16-4099-integer-column-picks", batch=2, dim=96, L=4099, N=16,
         dtype="bfloat16", segments=None, chunk=256, final_grad=True,
         config=dict(bit_picks=True)),
    dict(id="bf16-4099-no-backward-prefetch-groups", batch=2, dim=128, L=4099, N=16,
         dtype="bfloat16", groups=2, segments=None, chunk=256, final_grad=True,
         config=dict(bwd_prefetch=False)),
    dict(id="bf16-4096-previous-forward-float-picks-2-stages", batch=1, dim=64, L=4096, N=16,
         dtype="bfloat16", segments=3, chunk=256, final_grad=True,
         config=dict(bit_picks=False, stages=2, fwd_maxnreg=None)),
    dict(id="fp32-4096-default-plan-4-position-tiles", batch=1, dim=128, L=4096, N=16,
         segments=None, chunk=256, final_grad=True),
    dict(id="bf16-4104-pipelined-state-loop", batch=2, dim=96, L=4104, N=16,
         dtype="bfloat16", segments=None, chunk=256, final_grad=True,
         config=dict(bwd_stages=3)),
    dict(id="bf16-4099-summaries-in-their-own-tiles", batch=2, dim=192, L=4099, N=16,
         dtype="bfloat16", segments=None, chunk=256, final_grad=True,
         config=dict(fwd_summary_warps=4, bwd_summary_warps=2)),
    # the output pass in Gluon (aligned rows only: 16-byte copies)
    dict(id="bf16-4096-gluon-output-pass-groups", batch=2, dim=192, L=4096, N=16,
         dtype="bfloat16", groups=2, segments=None, chunk=256, final_grad=True,
         config=dict(gluon=True)),
    dict(id="fp32-2048-gluon-output-pass", batch=1, dim=96, L=2048, N=16, segments=3,
         chunk=128, config=dict(gluon=True)),
    dict(id="bf16-1024-gluon-output-pass-N8-plain", batch=1, dim=64, L=1024, N=8,
         dtype="bfloat16", segments=2, chunk=64, D=False, z=False, bias=False,
         softplus=False, init=False, config=dict(gluon=True, stages=2)),
]


@pytest.fixture
def configured():
    """The launcher module, with outputs NaN-poisoned while the test runs."""
    from mambadna.kernels.launch import set_poison_outputs
    from mambadna.kernels.selective_scan import triton as triton_scan

    set_poison_outputs(True)
    yield triton_scan
    set_poison_outputs(False)


@pytest.mark.parametrize("case", GPU_CASES, ids=[c["id"] for c in GPU_CASES])
def test_compiled_kernels_match_definition(case, configured):
    check(case, run_case(case, "cuda", config=case_config(case, min(64, case["chunk"]))))


def test_auto_backend_uses_triton_on_cuda(configured, monkeypatch):
    from mambadna.kernels import selective_scan

    calls = []
    real = configured._SelectiveScan.apply
    monkeypatch.setattr(configured._SelectiveScan, "apply",
                        lambda *a: calls.append(1) or real(*a))
    x = make_inputs(CASES[0], "cuda")
    selective_scan(**x)
    assert calls, "backend='auto' on CUDA tensors did not reach the Triton kernels"


def test_offsets_past_2_to_31_elements(configured):
    """batch * dim * L = 2^31 + 2^20: the last rows must be right (64-bit offsets)."""
    from mambadna.kernels import selective_scan

    batch, dim, length, n = 1, 2049, 1 << 20, 4
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(batch, dim, length, device="cuda", generator=g, dtype=torch.bfloat16)
    delta = torch.full_like(u, -2.0)
    A = -torch.rand(dim, n, device="cuda", generator=g) - 0.5
    B = torch.randn(batch, n, length, device="cuda", generator=g, dtype=torch.bfloat16)
    C = torch.randn_like(B)
    out, final = selective_scan(u, delta, A, B, C, delta_softplus=True,
                                return_final_state=True)
    assert torch.isfinite(out).all()
    tail = slice(dim - 3, dim)  # channels whose offsets are past 2^31
    ref_out, ref_final = selective_scan(
        u[:, tail].float(), delta[:, tail].float(), A[tail], B.float(), C.float(),
        delta_softplus=True, return_final_state=True, backend="reference")
    assert ((out[:, tail].float() - ref_out).norm() / ref_out.norm()) < 3e-2
    torch.testing.assert_close(final[:, tail], ref_final, rtol=1e-3, atol=1e-4)
