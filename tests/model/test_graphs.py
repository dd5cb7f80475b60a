"""GraphedHiddenStates: the same hidden states as the model (on CPU, where it runs the model
eagerly; the CUDA-graph replay is timed and compared by benchmarks/model_profile.py), and one
shape only."""

from __future__ import annotations

import pytest
import torch

import mambadna
from mambadna.errors import InputError
from mambadna.model.graphs import GraphedHiddenStates


def test_graphed_forward_equals_the_model_and_refuses_other_shapes():
    cfg = mambadna.ModelConfig.from_preset("tiny", n_layer=2)
    torch.manual_seed(0)
    model = mambadna.MambaDNA(cfg).eval()
    graphed = GraphedHiddenStates(model, batch=2, length=50, dtype=None)
    tokens = torch.randint(0, 4, (2, 50), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model.hidden_states(tokens)
    torch.testing.assert_close(graphed(tokens), expected)
    with pytest.raises(InputError, match="captured for tokens of shape"):
        graphed(tokens[:, :40])
