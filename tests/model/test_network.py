"""The MambaDNA network: sizes, initialisation, streaming exactness, padding, heads, training."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mambadna
from mambadna.alphabet import PAD, A, N, T, encode
from mambadna.errors import ConfigError, InputError
from mambadna.model import MambaDNA, ModelConfig, ModelState, lm_loss
from mambadna.model.mixer import reverse_within_lengths

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(**overrides) -> MambaDNA:
    torch.manual_seed(overrides.pop("seed", 0))
    cfg = dict(d_model=32, n_layer=3, d_state=8)
    cfg.update(overrides)
    return MambaDNA(ModelConfig(**cfg)).eval()


def random_tokens(batch, length, seed=0, with_n=False):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(A, T + 1, (batch, length), generator=g)
    if with_n:
        tokens[:, ::7] = N
    return tokens


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- sizes and initialisation


def expected_parameters(d_model, n_layer, d_state=16, d_conv=4, expand=2, vocab=16):
    d_inner, rank = expand * d_model, math.ceil(d_model / 16)
    per_block = (d_model * 2 * d_inner  # in_proj
                 + d_inner * d_conv + d_inner  # conv weight + bias
                 + d_inner * (rank + 2 * d_state)  # x_proj
                 + rank * d_inner + d_inner  # dt_proj
                 + d_inner * d_state + d_inner  # A_log, D
                 + d_inner * d_model  # out_proj
                 + d_model)  # norm
    return vocab * d_model + n_layer * per_block + d_model  # tied embedding + final norm


@pytest.mark.parametrize("preset, d_model, n_layer, paper", [
    ("tiny", 64, 4, None), ("paper-1.4m", 128, 12, 1.4e6), ("paper-7m", 256, 16, 7e6)])
def test_preset_parameter_counts(preset, d_model, n_layer, paper):
    model = MambaDNA(ModelConfig.from_preset(preset))
    count = model.num_parameters()
    assert count == expected_parameters(d_model, n_layer)
    if paper is not None:  # the Mamba paper's DNA model sizes
        assert abs(count - paper) / paper < 0.01, count


def test_config_round_trip_and_errors():
    cfg = ModelConfig.from_preset("paper-1.4m", num_labels=3, pooling="mean")
    assert cfg.dt_rank == 8 and cfg.d_inner == 256
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown model preset"):
        ModelConfig.from_preset("huge")
    with pytest.raises(ConfigError, match="unknown model config key"):
        ModelConfig.from_dict({"d_model": 8, "n_layers": 2})
    for bad in (dict(d_model=0), dict(dt_rank="big"), dict(num_labels=1), dict(pooling="max"),
                dict(vocab_size=8), dict(dt_min=0.2, dt_max=0.1)):
        with pytest.raises(ConfigError):
            ModelConfig(**bad)


def test_initialisation_follows_the_paper():
    model = small(n_layer=4)
    cfg = model.config
    for layer in model.layers:
        ssm = layer.mixer.ssm
        dt = F.softplus(ssm.dt_proj.bias)
        assert dt.min() >= cfg.dt_min * 0.999 and dt.max() <= cfg.dt_max * 1.001
        bound = cfg.dt_rank ** -0.5
        assert ssm.dt_proj.weight.abs().max() <= bound
        torch.testing.assert_close(ssm.A_log, torch.log(torch.arange(1.0, 9.0)).repeat(64, 1))
        assert torch.equal(ssm.D, torch.ones(64))
        # out_proj: kaiming-uniform bound 1/sqrt(fan_in), then scaled by 1/sqrt(n_layer).
        assert layer.mixer.out_proj.weight.abs().max() <= 1 / math.sqrt(64) / math.sqrt(4)
    decay_free = {name for name, p in model.named_parameters()
                  if getattr(p, "_no_weight_decay", False)}
    assert "layers.0.mixer.ssm.A_log" in decay_free and "layers.0.mixer.ssm.D" in decay_free
    assert "layers.0.mixer.ssm.dt_proj.bias" in decay_free and "norm_f.weight" in decay_free
    assert "layers.0.mixer.in_proj.weight" not in decay_free
    assert "embedding.weight" not in decay_free


# ---------------------------------------------------------------- streaming exactness


@pytest.mark.parametrize("cuts", [[100], [1, 2, 3, 50], [17, 33, 150, 199], [64, 128, 192]])
def test_chunked_forward_with_state_equals_full_pass(cuts):
    model = small()
    tokens = random_tokens(2, 200, with_n=True)
    with torch.no_grad():
        full, full_state = model(tokens, return_state=True)
        pieces, state = [], None
        for lo, hi in zip([0, *cuts], [*cuts, 200]):
            logits, state = model(tokens[:, lo:hi], state=state, return_state=True)
            pieces.append(logits)
    assert max_diff(torch.cat(pieces, 1), full) < 1e-5
    for a, b in zip(state.ssm + state.conv, full_state.ssm + full_state.conv):
        assert max_diff(a, b) < 1e-5


def test_dropping_the_conv_state_changes_the_output():
    model = small()
    tokens = random_tokens(1, 120, seed=1)
    with torch.no_grad():
        full = model(tokens)
        _, state = model(tokens[:, :60], return_state=True)
        exact = model(tokens[:, 60:], state=state)
        ssm_only = ModelState([torch.zeros_like(c) for c in state.conv], state.ssm)
        dropped = model(tokens[:, 60:], state=ssm_only)
        fresh = model(tokens[:, 60:])
    assert max_diff(exact, full[:, 60:]) < 1e-5
    # Per-position error of dropping the conv state (the last d_conv-1 inputs of every block)
    # or both states: the conv state matters most right after the boundary; later on, the
    # carried SSM state keeps the error well below that of a fresh start.
    lost_conv = (dropped - full[:, 60:]).abs().amax(-1)[0]
    lost_both = (fresh - full[:, 60:]).abs().amax(-1)[0]
    assert lost_conv[:3].max() > 1e-2
    assert 0 < lost_conv[20:].max() < 0.5 * lost_both[20:].max()


def test_step_by_step_equals_full_forward():
    model = small()
    tokens = random_tokens(2, 40, seed=2, with_n=True)
    with torch.no_grad():
        full, full_state = model(tokens, return_state=True)
        state, steps = None, []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
        assert max_diff(torch.stack(steps, 1), full) < 1e-5
        for a, b in zip(state.ssm + state.conv, full_state.ssm + full_state.conv):
            assert max_diff(a, b) < 1e-5
        # Stepping continues a chunked prefix too.
        _, prefix_state = model(tokens[:, :25], return_state=True)
        logits, _ = model.step(tokens[:, 25], prefix_state)
        assert max_diff(logits, full[:, 25]) < 1e-5


def test_state_helpers_and_validation():
    model = small()
    state = model.allocate_state(3)
    assert state.n_layer == 3 and state.batch_size == 3
    assert state.conv[0].shape == (3, 64, 3) and state.ssm[0].shape == (3, 64, 8)
    assert all(t.dtype == torch.float32 for t in state.conv + state.ssm)
    assert state.select([0, 2]).batch_size == 2
    with pytest.raises(InputError, match="batch 3"):
        model(random_tokens(2, 5), state=state)
    with pytest.raises(TypeError, match="ModelState"):
        model(random_tokens(2, 5), state=(state.conv, state.ssm))


# ---------------------------------------------------------------- padding and heads


def padded_batch(lengths, seed=0):
    rows = [random_tokens(1, n, seed=seed + i)[0] for i, n in enumerate(lengths)]
    tokens = torch.full((len(rows), max(lengths)), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    return rows, tokens


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_real_positions(bidirectional):
    model = small(bidirectional=bidirectional)
    rows, tokens = padded_batch([37, 50, 1, 18])
    with torch.no_grad():
        hidden = model.hidden_states(tokens)
        for i, row in enumerate(rows):
            alone = model.hidden_states(row[None])
            assert max_diff(hidden[i, :len(row)], alone[0]) < 1e-5


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_reads_real_positions(pooling):
    model = small(num_labels=3, pooling=pooling)
    rows, tokens = padded_batch([30, 12, 45])
    with torch.no_grad():
        batched = model.classify_logits(tokens)
        assert batched.shape == (3, 3) and batched.dtype == torch.float32
        for i, row in enumerate(rows):
            hidden = model.hidden_states(row[None])
            pooled = hidden[:, -1] if pooling == "last" else hidden.mean(1)
            assert max_diff(batched[i], model.classifier(pooled)[0]) < 1e-5
    with pytest.raises(InputError, match="only PAD"):
        model.classify_logits(torch.zeros(1, 4, dtype=torch.long))


def test_pool_validates_lengths_and_mode():
    model = small()
    hidden = torch.randn(2, 5, 32)
    torch.testing.assert_close(model.pool(hidden, torch.tensor([2, 5]), "mean")[0],
                               hidden[0, :2].mean(0))
    torch.testing.assert_close(model.pool(hidden, [2, 5], "last")[0], hidden[0, 1])
    with pytest.raises(InputError, match="lengths must be"):
        model.pool(hidden, torch.tensor([0, 5]))
    with pytest.raises(ConfigError, match="pooling must be"):
        model.pool(hidden, mode="median")
    with pytest.raises(ConfigError, match="no classification head"):
        model.classify_logits(random_tokens(1, 4))


def test_lm_loss_ignores_pad_and_n():
    logits = torch.randn(2, 6, 16, requires_grad=True)
    tokens = torch.tensor([[A, A + 1, N, T, PAD, PAD], [T, A, A, N, N, A + 2]])
    loss = lm_loss(logits, tokens)
    pairs = [(0, 0), (0, 2), (1, 0), (1, 1), (1, 4)]  # (row, t) whose target t+1 is a base
    expected = torch.stack([F.cross_entropy(logits[r, t], tokens[r, t + 1]) for r, t in pairs])
    torch.testing.assert_close(loss, expected.mean())
    empty = lm_loss(logits, torch.tensor([[A, N, N, PAD, PAD, PAD]] * 2))
    empty.backward()
    assert empty.item() == 0.0 and logits.grad is not None


def test_token_validation():
    model = small()
    with pytest.raises(InputError, match="token ids must be in"):
        model(torch.tensor([[5, 16]]))
    with pytest.raises(InputError, match="integer token ids"):
        model(torch.zeros(1, 3))
    with pytest.raises(InputError, match=r"\(batch, L\)"):
        model(torch.tensor([5, 6, 7]))
    assert model(torch.tensor([[5, 6]], dtype=torch.uint8)).shape == (1, 2, 16)


# ---------------------------------------------------------------- bidirectional


def test_bidirectional_sees_the_future_and_cannot_stream():
    uni, bi = small(), small(bidirectional=True)
    assert bi.num_parameters() > uni.num_parameters()
    tokens = random_tokens(1, 30, seed=3)
    changed = tokens.clone()
    changed[0, -1] = A if tokens[0, -1] != A else T
    with torch.no_grad():
        assert max_diff(uni(tokens)[:, 0], uni(changed)[:, 0]) == 0
        assert max_diff(bi(tokens)[:, 0], bi(changed)[:, 0]) > 1e-6
    for call in (lambda: bi.step(tokens[:, 0]), lambda: bi(tokens, return_state=True),
                 lambda: bi.allocate_state(1)):
        with pytest.raises(ConfigError, match="cannot stream"):
            call()


def test_reverse_within_lengths():
    x = torch.arange(12.0).reshape(2, 1, 6)
    out = reverse_within_lengths(x, torch.tensor([4, 6]))
    assert out[0, 0].tolist() == [3, 2, 1, 0, 4, 5]
    assert out[1, 0].tolist() == [11, 10, 9, 8, 7, 6]
    assert torch.equal(reverse_within_lengths(out, torch.tensor([4, 6])), x)


# ---------------------------------------------------------------- embed


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_embed_pools_each_sequence_in_input_order(pool, random_dna):
    model = small()
    seqs = [random_dna(n, seed=n) for n in (50, 9, 33)]
    seqs.append(np.asarray(encode("ACGTRYNNACGT")))  # a token array, IUPAC read as N
    vectors = model.embed(seqs, batch_size=2, pool=pool)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    with torch.no_grad():
        for seq, vector in zip(seqs, vectors):
            tokens = torch.as_tensor(encode(seq) if isinstance(seq, str) else seq).long()[None]
            expected = model.pool(model.hidden_states(tokens), mode=pool)[0].numpy()
            np.testing.assert_allclose(vector, expected, atol=1e-5)
    # Streaming in pieces of 7 bases gives the same vectors.
    np.testing.assert_allclose(model.embed(seqs, pool=pool, segment_length=7), vectors,
                               atol=1e-5)


def test_embed_errors_and_mode_restored():
    model = small().train()
    with pytest.raises(InputError, match="sequence 1 is empty"):
        model.embed(["ACGT", ""])
    with pytest.raises(InputError, match="sequence 0"):
        model.embed(["AC-GT"])
    assert model.embed(["ACGT"]).shape == (1, 32)
    assert model.training


# ---------------------------------------------------------------- training


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = small(n_layer=2).train()
    ckpt = small(n_layer=2, gradient_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    # (Recomputation stops early once the saved tensors are rebuilt: hook an inner module.)
    ckpt.layers[0].mixer.ssm.register_forward_hook(lambda *args: calls.append(1))
    tokens = random_tokens(2, 40, seed=4)
    grads = []
    for model in (plain, ckpt):
        lm_loss(model(tokens), tokens).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert len(calls) == 2  # recomputed in the backward pass
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_a_checkpoint_recomputes_under_its_forward_scan_config():
    """A ``with scan_config(...)`` block around the forward is over by the backward; the
    checkpoint's recomputation must still see it, or the scan saves another count of chunk
    states and torch refuses the recomputed tensors (it did, on the GPU, with low-memory)."""
    from mambadna.kernels import scan_config
    from mambadna.kernels.selective_scan import get_config

    model = small(n_layer=2, gradient_checkpointing=True).train()
    chunks = []
    model.layers[1].mixer.ssm.register_forward_hook(
        lambda *args: chunks.append(get_config().chunk))
    tokens = random_tokens(2, 40, seed=4)
    with scan_config(chunk=256):
        loss = lm_loss(model(tokens), tokens)
    loss.backward()
    assert chunks == [256, 256]  # the forward, then the recomputation in the backward
    assert get_config().chunk != 256


def test_bf16_autocast_keeps_the_residual_fp32():
    model = small(n_layer=2).train()
    dtypes = []
    model.layers[0].register_forward_hook(lambda mod, inp, out: dtypes.append(out[1].dtype))
    model.layers[0].mixer.register_forward_hook(lambda mod, inp, out: dtypes.append(out[0].dtype))
    tokens = random_tokens(2, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
    assert dtypes == [torch.bfloat16, torch.float32]  # mixer out bf16, residual fp32
    assert logits.dtype == torch.float32
    with torch.no_grad():
        assert max_diff(logits, model(tokens)) < 0.1
    lm_loss(logits, tokens).backward()


def test_a_preset_trains_on_cpu():
    cfg = mambadna.ModelConfig.from_preset("tiny", n_layer=2)
    torch.manual_seed(0)
    model = mambadna.MambaDNA(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # A period-4 repeat is predictable from context: the loss must fall well below log(4).
    tokens = torch.tensor([[A, A + 1, A + 2, T] * 24] * 2)
    losses = []
    for _ in range(25):
        loss = lm_loss(model(tokens), tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and losses[-1] < 0.5 * math.log(4)


@pytest.mark.parametrize("kw", [dict(d_model=64, n_layer=1, num_labels=3),
                                dict(d_model=100, n_layer=3, d_state=8, expand=3, d_conv=3),
                                dict(d_model=256, n_layer=16)])
def test_parameter_count_from_the_shapes_alone(kw):
    from mambadna.model.network import parameter_count

    config = ModelConfig(**kw)
    assert parameter_count(config) == MambaDNA(config).num_parameters()


def test_a_model_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    from mambadna.model import network
    from mambadna.model.network import parameter_count

    with pytest.raises(ConfigError, match=r"n_layer 64 is .* parameters: .* GiB for the fp32 "
                                          r"weights alone, more than") as info:
        MambaDNA(ModelConfig(d_model=1 << 20, n_layer=64))  # petabytes: would never allocate
    assert "d_model up to" in info.value.fix
    monkeypatch.setattr(network, "_available_memory", lambda: 64 << 20)  # 64 MiB
    with pytest.raises(ConfigError) as info:
        MambaDNA(ModelConfig(d_model=1024, n_layer=8))
    fits = re.search(r"d_model up to (\d+) fits; at d_model 1024, n_layer up to (\d+)",
                     info.value.fix)
    assert fits, info.value.fix
    d_max, n_max = map(int, fits.groups())
    budget = (64 << 20) // 4
    assert parameter_count(ModelConfig(d_model=d_max, n_layer=8)) <= budget
    assert parameter_count(ModelConfig(d_model=d_max + 1, n_layer=8)) > budget
    assert parameter_count(ModelConfig(d_model=1024, n_layer=n_max)) <= budget
    assert parameter_count(ModelConfig(d_model=1024, n_layer=n_max + 1)) > budget
    MambaDNA(ModelConfig(d_model=d_max, n_layer=8))  # what it says fits is built
