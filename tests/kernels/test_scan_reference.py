"""The PyTorch selective scans: chunked == per-position definition, gradients, state, validation."""

from __future__ import annotations

import pytest
import torch

from mambadna.kernels import selective_scan
from mambadna.kernels.selective_scan.naive import selective_scan_chunked, selective_scan_reference


def make_inputs(batch, dim, n_state, length, groups=None, dtype=torch.float64, seed=0,
                dt_shift=0.0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    bc_shape = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    return dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length) * 0.5 + dt_shift,
        A=-(torch.rand(dim, n_state, generator=g, dtype=dtype) * 3 + 0.1),
        B=randn(*bc_shape),
        C=randn(*bc_shape),
        D=randn(dim),
        z=randn(batch, dim, length),
        delta_bias=randn(dim) * 0.1,
        delta_softplus=True,
        initial_state=randn(batch, dim, n_state),
    )


@pytest.mark.parametrize("length", [1, 15, 16, 17, 63, 100])
@pytest.mark.parametrize("groups", [None, 1, 3])
def test_chunked_matches_loop(length, groups):
    x = make_inputs(2, 6, 4, length, groups=groups, seed=length)
    out_ref, state_ref = selective_scan_reference(**x, return_final_state=True)
    for chunk in (16, 7):
        out, state = selective_scan_chunked(**x, return_final_state=True, chunk_size=chunk)
        torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(state, state_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("drop", ["D", "z", "delta_bias", "initial_state"])
def test_optional_arguments(drop):
    x = make_inputs(1, 4, 3, 33, seed=1)
    x[drop] = None
    x["delta_softplus"] = drop != "delta_bias"
    torch.testing.assert_close(selective_scan_chunked(**x), selective_scan_reference(**x))


def test_extreme_decay_chunks_fall_back_exactly():
    # dt * |A| ~ 30 per position: a 16-position chunk decays by ~500, past the closed form's range.
    x = make_inputs(1, 3, 2, 40, dtype=torch.float32, dt_shift=12.0)
    out = selective_scan_chunked(**x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, selective_scan_reference(**x), rtol=1e-5, atol=1e-5)


def test_state_carries_a_sequence_split_in_two():
    x = make_inputs(2, 5, 4, 50, seed=3)
    full, full_state = selective_scan(**x, return_final_state=True)
    first = {k: (v[..., :21] if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    second = {k: (v[..., 21:] if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    out1, state1 = selective_scan(**first, return_final_state=True)
    second["initial_state"] = state1
    out2, state2 = selective_scan(**second, return_final_state=True)
    torch.testing.assert_close(torch.cat([out1, out2], -1), full)
    torch.testing.assert_close(state2, full_state)


def test_bf16_inputs_give_bf16_output_and_fp32_state():
    x = make_inputs(1, 4, 3, 20, dtype=torch.float32)
    for k in ("u", "delta", "B", "C", "z"):
        x[k] = x[k].to(torch.bfloat16)
    out, state = selective_scan(**x, return_final_state=True)
    assert out.dtype == torch.bfloat16 and state.dtype == torch.float32
    ref = selective_scan_reference(**{k: (v.float() if isinstance(v, torch.Tensor) else v)
                                      for k, v in x.items()})
    torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2)


def test_chunked_gradients_gradcheck():
    x = make_inputs(1, 2, 2, 9, groups=1, seed=5)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
    tensors = [x[n].clone().requires_grad_(True) for n in names]

    def fn(*ts):
        kw = dict(zip(names, ts))
        out, state = selective_scan_chunked(**kw, delta_softplus=True, return_final_state=True,
                                            chunk_size=4)
        return out, state

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-5)


def assert_same_gradients(x):
    """Every gradient of the chunked scan equals the per-position definition's (fp64)."""
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
    grads = []
    for fn in (selective_scan_reference, selective_scan_chunked):
        ts = {n: x[n].clone().requires_grad_(True) for n in names}
        out, state = fn(**ts, delta_softplus=True, return_final_state=True)
        (out.sin().sum() + state.cos().sum()).backward()
        grads.append([ts[n].grad for n in names])
    for name, g_ref, g in zip(names, *grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9, msg=name)


def test_chunked_gradients_match_loop_gradients():
    assert_same_gradients(make_inputs(2, 4, 3, 37, groups=2, seed=7))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(u=torch.zeros(2, 4)), "u must be"),
        (dict(delta=torch.zeros(1, 4, 9)), "delta must have"),
        (dict(A=torch.zeros(5, 3)), "A must be"),
        (dict(A=torch.zeros(4, 3, dtype=torch.bfloat16)), "A must be fp32"),
        (dict(B=torch.zeros(1, 3, 7)), "B must be"),
        (dict(B=torch.zeros(1, 3, 3, 8), C=torch.zeros(1, 3, 3, 8)), "not divisible"),
        (dict(D=torch.zeros(3)), "D must be"),
        (dict(initial_state=torch.zeros(1, 4, 2)), "initial_state must be"),
        (dict(z=torch.zeros(1, 4, 7)), "z must have"),
    ],
)
def test_validation_errors(change, message):
    x = dict(u=torch.zeros(1, 4, 8), delta=torch.zeros(1, 4, 8), A=torch.zeros(4, 3),
             B=torch.zeros(1, 3, 8), C=torch.zeros(1, 3, 8))
    x.update(change)
    with pytest.raises(ValueError, match=message):
        selective_scan(**x)


def test_unknown_backend():
    x = make_inputs(1, 2, 2, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        selective_scan(**x, backend="cuda")


def test_extreme_decay_chunks_have_exact_gradients():
    # The first chunks decay past the closed form's range (walked stepwise), the rest do not.
    x = make_inputs(1, 3, 2, 45, seed=11)
    x["delta"][..., :20] += 60.0
    assert_same_gradients(x)
