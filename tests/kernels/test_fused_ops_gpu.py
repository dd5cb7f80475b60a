"""The fused conv1d and residual-add + RMSNorm kernels compiled on a GPU, against their
references (the interpreter's cases of test_fused_ops.py, plus model-sized shapes), and the
model on CUDA (every Triton kernel) against the same model on the CPU (PyTorch references)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_fused_ops import CASES, run_case, tolerance

import mambadna

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BIG = [dict(id="conv-w4-silu-state-long", width=4, L=70_001, state=True, act="silu",
            dtype="bfloat16"),
       dict(id="norm-model-rows", rows=(2, 50_001), n=256, residual=True, dtype="bfloat16",
            out="bfloat16")]


@pytest.mark.parametrize("case", CASES + BIG, ids=[c["id"] for c in CASES + BIG])
def test_kernel_matches_reference_on_gpu(case):
    row = run_case(case, "cuda")
    assert not row["nan"]
    for name, err in row["errors"].items():
        assert err <= tolerance(case), f"{name}: relative error {err:.2e}"


def test_streaming_is_exact_on_gpu():
    row = run_case(dict(id="streaming"), "cuda")
    assert row["out"] < 1e-5 and row["state"] == 0.0


def test_model_on_gpu_matches_cpu():
    cfg = mambadna.ModelConfig.from_preset("tiny", n_layer=2)
    torch.manual_seed(0)
    cpu = mambadna.MambaDNA(cfg)
    gpu = mambadna.MambaDNA(cfg).cuda()
    gpu.load_state_dict(cpu.state_dict())
    tokens = torch.randint(0, 4, (2, 3000))
    outs = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        hidden = model.hidden_states(tokens.to(device))
        hidden.square().mean().backward()
        outs.append((hidden.cpu(), {n: p.grad.cpu() for n, p in model.named_parameters()}))
    (h1, g1), (h2, g2) = outs
    assert float((h2 - h1).norm() / h1.norm()) < 1e-4
    for name, grad in g1.items():
        assert float((g2[name] - grad).norm() / grad.norm().clamp(min=1e-12)) < 1e-3, name
