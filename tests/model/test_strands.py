"""RC-equivariant models (both strands through shared weights) and block/pooling choices."""

from __future__ import annotations

import json

import pytest
import torch

from mambadna.alphabet import PAD, A, N, T
from mambadna.errors import ConfigError
from mambadna.model import MambaDNA, ModelConfig, lm_loss, load_model
from mambadna.model.strands import complement_index, flip_positions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMPLEMENT = complement_index(16)


def build(seed=0, **overrides) -> MambaDNA:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, n_layer=3, d_state=8, rc_equivariant=True)
    cfg.update(overrides)
    return MambaDNA(ModelConfig(**cfg)).eval()


def padded_batch(lengths, seed=0):
    """Random bases (N at some positions) right-padded to the longest length."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    tokens = torch.randint(A, T + 1, (len(lengths), int(lengths.max())), generator=g)
    tokens[:, 3::11] = N
    for row, n in enumerate(lengths.tolist()):
        tokens[row, n:] = PAD
    return tokens, lengths


def rc(tokens, lengths):
    return flip_positions(COMPLEMENT[tokens], lengths)


def real(lengths, width):
    return torch.arange(width) < lengths[:, None]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_outputs_on_the_reverse_complement_are_the_reverse_complement(bidirectional):
    model = build(bidirectional=bidirectional, num_labels=3, pooling="mean")
    tokens, lengths = padded_batch([41, 30, 9])
    mask = real(lengths, tokens.shape[1])
    with torch.no_grad():
        # Per-base logits: flipped in position and complemented in base.
        forward, backward = model.base_logits(tokens), model.base_logits(rc(tokens, lengths))
        expected = flip_positions(forward[..., COMPLEMENT], lengths)
        torch.testing.assert_close(backward[mask], expected[mask], atol=1e-5, rtol=1e-5)
        # Hidden pairs: flipped in position, strands swapped.
        hidden = model.hidden_states(tokens)
        hidden_rc = model.hidden_states(rc(tokens, lengths))
        swapped = torch.cat([hidden[..., 32:], hidden[..., :32]], dim=-1)
        torch.testing.assert_close(hidden_rc[mask], flip_positions(swapped, lengths)[mask],
                                   atol=1e-5, rtol=1e-5)
        # Pooled vectors and class logits: invariant.
        for mode in ("mean", "max", "last"):
            torch.testing.assert_close(model.pool(hidden_rc, lengths, mode),
                                       model.pool(hidden, lengths, mode), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.classify_logits(rc(tokens, lengths)),
                                   model.classify_logits(tokens), atol=1e-5, rtol=1e-5)
        cls = model.hidden_states(tokens, append_cls=True)
        cls_rc = model.hidden_states(rc(tokens, lengths), append_cls=True)
        torch.testing.assert_close(model.pool(cls_rc, lengths + 1, "last"),
                                   model.pool(cls, lengths + 1, "last"), atol=1e-5, rtol=1e-5)
    assert hidden.shape == (3, 41, 64) and model.hidden_size == 64


def test_next_base_logits_never_see_the_base_they_predict():
    model = build()
    tokens, _ = padded_batch([30])
    changed = tokens.clone()
    changed[0, 12] = A if tokens[0, 12] != A else T
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert before.shape == (1, 30, 16)
    # logits[t] predict base t+1: position 11 must not move when base 12 changes...
    assert (before[0, 11] - after[0, 11]).abs().max() < 1e-5
    # ...while both neighbours do (left: forward strand; two back: the reverse strand).
    assert (before[0, 12] - after[0, 12]).abs().max() > 1e-3
    assert (before[0, 10] - after[0, 10]).abs().max() > 1e-3


def test_same_weights_as_a_causal_model_and_training_works():
    causal = MambaDNA(ModelConfig(d_model=32, n_layer=3, d_state=8))
    model = build().train()
    assert model.num_parameters() == causal.num_parameters()
    model.load_state_dict(causal.state_dict())  # no extra weight, no missing one
    tokens, _ = padded_batch([64, 64])
    loss = lm_loss(model(tokens), tokens)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.parameters()))  # every weight is trained
    assert all(torch.isfinite(g).all() for g in grads)


def test_cannot_stream():
    model = build()
    tokens, _ = padded_batch([8])
    with pytest.raises(ConfigError, match="RC-equivariant model cannot stream"):
        model(tokens, return_state=True)
    with pytest.raises(ConfigError, match="cannot stream"):
        model.allocate_state(1)


def test_saved_and_loaded_and_old_configs_load_as_not_equivariant(tmp_path):
    model = build(num_labels=2)
    model.save_pretrained(tmp_path / "rc", labels=["a", "b"])
    loaded = load_model(tmp_path / "rc")
    assert loaded.config.rc_equivariant is True
    tokens, _ = padded_batch([20])
    with torch.no_grad():
        torch.testing.assert_close(loaded.classify_logits(tokens), model.classify_logits(tokens))
    config = json.loads((tmp_path / "rc" / "config.json").read_text())
    del config["rc_equivariant"]  # a model saved before the option existed
    assert ModelConfig.from_dict({k: v for k, v in config.items()
                                  if k in ModelConfig.__dataclass_fields__}).rc_equivariant \
        is False
    with pytest.raises(ConfigError, match="rc_equivariant must be true or false"):
        ModelConfig(rc_equivariant="yes")


@pytest.mark.parametrize("rc_equivariant", [False, True])
def test_layers_pick_blocks_and_average_them(rc_equivariant):
    model = build(rc_equivariant=rc_equivariant)
    tokens, lengths = padded_batch([25, 14])
    with torch.no_grad():
        last = model.hidden_states(tokens, lengths=lengths)
        torch.testing.assert_close(model.hidden_states(tokens, lengths=lengths, layers=[-1]),
                                   last)
        torch.testing.assert_close(model.hidden_states(tokens, lengths=lengths, layers=2), last)
        first = model.hidden_states(tokens, lengths=lengths, layers=[0])
        both = model.hidden_states(tokens, lengths=lengths, layers=[-1, 0])
    torch.testing.assert_close(both, (first + last) / 2)
    assert (first - last).abs().max() > 1e-3
    assert model.resolve_layers([-1, -3]) == [0, 2]
    for bad in ([3], [-4], [0, -3], [], [True]):
        with pytest.raises(ConfigError):
            model.resolve_layers(bad)
