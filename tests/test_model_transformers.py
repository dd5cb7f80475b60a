"""Our model computes the same function as transformers' MambaForCausalLM with the same weights.

Runs only where ``transformers`` is installed (it is not a dependency of mambadna); the CPU
benchmark (python -m mambadna.model.bench) makes the same comparison at full size.
"""

from __future__ import annotations

import pytest
import torch

from mambadna.alphabet import A, T
from mambadna.model import MambaDNA, ModelConfig
from mambadna.model.bench import to_transformers

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
