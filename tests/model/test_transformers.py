"""Our model computes the same function as transformers' MambaForCausalLM with the same weights.

Runs only where ``transformers`` is installed (it is not a dependency of mambadna); the CPU
benchmark (python benchmarks/model_cpu.py) makes the same comparison at full size, with the
converter imported from there (benchmarks/ first on sys.path: benchmarks/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mambadna.alphabet import A, T
from mambadna.model import MambaDNA, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from model_cpu import to_transformers  # benchmarks/model_cpu.py

pytest.importorskip("transformers")


def test_same_logits_as_transformers_mamba():
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig(d_model=32, n_layer=3, d_state=8)).eval()
    hf = to_transformers(model)
    tokens = torch.randint(A, T + 1, (2, 70), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(input_ids=tokens, use_cache=False).logits
    assert (ours - theirs).abs().max().item() < 1e-5
