"""Causal conv1d with state and the single-step scan update, against their definitions."""

from __future__ import annotations

import pytest
import torch

from mambadna.kernels import (
    causal_conv1d,
    causal_conv1d_update,
    selective_scan,
    selective_state_update,
)
from mambadna.kernels.selective_scan.naive import selective_scan_reference


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def conv_by_definition(x, weight, bias, state):
    """out[b,d,t] = bias[d] + sum_k weight[d,k] * xs[b,d,t+k], xs = [state | x], by loops."""
    xs = torch.cat([state, x], dim=-1)
    width = weight.shape[1]
    out = torch.zeros_like(x)
    for t in range(x.shape[-1]):
        for k in range(width):
            out[..., t] += weight[:, k] * xs[..., t + k]
    return out + bias[:, None]


# ---------------------------------------------------------------- causal conv1d


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("length", [1, 3, 17])
def test_conv_matches_definition(width, length):
    x, w, b = randn(2, 5, length, seed=1), randn(5, width, seed=2), randn(5, seed=3)
    state = randn(2, 5, width - 1, seed=4)
    out, final = causal_conv1d(x, w, b, initial_state=state, return_final_state=True)
    torch.testing.assert_close(out, conv_by_definition(x, w, b, state))
    torch.testing.assert_close(final, torch.cat([state, x], -1)[..., -(width - 1):]
                               if width > 1 else state)
    # No state means zeros before the sequence start.
    zeros = torch.zeros_like(state)
    torch.testing.assert_close(causal_conv1d(x, w, b), conv_by_definition(x, w, b, zeros))


def test_conv_silu_activation():
    x, w, b = randn(1, 3, 9), randn(3, 4, seed=1), randn(3, seed=2)
    plain = causal_conv1d(x, w, b)
    torch.testing.assert_close(causal_conv1d(x, w, b, activation="silu"),
                               torch.nn.functional.silu(plain))
    torch.testing.assert_close(causal_conv1d(x, w, b, activation="swish"),
                               causal_conv1d(x, w, b, activation="silu"))


@pytest.mark.parametrize("cuts", [[1], [2, 3], [5, 6, 7, 20], [1, 2, 3, 4, 5]])
def test_conv_state_carries_across_pieces(cuts):
    # Pieces shorter than the kernel width (1, 2) must also carry the state correctly.
    x, w, b = randn(2, 4, 23), randn(4, 4, seed=1), randn(4, seed=2)
    full, full_state = causal_conv1d(x, w, b, return_final_state=True)
    outs, state = [], None
    for lo, hi in zip([0, *cuts], [*cuts, 23]):
        out, state = causal_conv1d(x[..., lo:hi], w, b, initial_state=state,
                                   return_final_state=True)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, -1), full)
    torch.testing.assert_close(state, full_state)


def test_conv_update_steps_equal_full_conv():
    x, w, b = randn(3, 6, 12), randn(6, 4, seed=1), randn(6, seed=2)
    state = randn(3, 6, 3, seed=3)
    full, full_state = causal_conv1d(x, w, b, initial_state=state, return_final_state=True,
                                     activation="silu")
    steps = []
    for t in range(12):
        out, new_state = causal_conv1d_update(x[..., t], state, w, b, activation="silu")
        assert new_state is not state
        steps.append(out)
        state = new_state
    torch.testing.assert_close(torch.stack(steps, -1), full)
    torch.testing.assert_close(state, full_state)


def test_conv_gradcheck_including_state():
    x, w, b, s = randn(1, 2, 6), randn(2, 3, seed=1), randn(2, seed=2), randn(1, 2, 2, seed=3)
    tensors = [t.requires_grad_(True) for t in (x, w, b, s)]

    def fn(x, w, b, s):
        return causal_conv1d(x, w, b, initial_state=s, return_final_state=True,
                             activation="silu")

    assert torch.autograd.gradcheck(fn, tensors)


def test_conv_keeps_bf16():
    x = randn(1, 4, 8, dtype=torch.bfloat16)
    out, state = causal_conv1d(x, randn(4, 4, dtype=torch.float32), torch.zeros(4),
                               return_final_state=True)
    assert out.dtype == torch.bfloat16 and state.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=torch.zeros(4, 8)), "x must be a"),
        (dict(weight=torch.zeros(3, 4)), "weight must be"),
        (dict(weight=torch.zeros(4, 4, dtype=torch.int64)), "weight must be floating"),
        (dict(bias=torch.zeros(5)), "bias must be"),
        (dict(initial_state=torch.zeros(1, 4, 4)), "initial_state must be"),
        (dict(activation="relu"), "activation must be"),
        (dict(x=torch.zeros(1, 4, 0)), "L must be at least 1"),
    ],
)
def test_conv_validation(change, message):
    args = dict(x=torch.zeros(1, 4, 8), weight=torch.zeros(4, 4), bias=None, initial_state=None,
                activation=None)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        causal_conv1d(**args)


def test_conv_update_validation():
    with pytest.raises(ValueError, match="conv_state must be"):
        causal_conv1d_update(torch.zeros(2, 4), torch.zeros(2, 4, 2), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="x must be a"):
        causal_conv1d_update(torch.zeros(2, 4, 1), torch.zeros(2, 4, 3), torch.zeros(4, 4))


# ---------------------------------------------------------------- selective state update


def scan_inputs(batch, dim, n_state, length, groups=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    bc = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length) * 0.5,
                A=-(torch.rand(dim, n_state, generator=g, dtype=dtype) * 3 + 0.1),
                B=r(*bc), C=r(*bc), D=r(dim), z=r(batch, dim, length), delta_bias=r(dim) * 0.1,
                initial_state=r(batch, dim, n_state))


def step_through(x, drop=()):
    """Run selective_state_update over every position; returns (out (b, d, L), final state)."""
    state = x["initial_state"]
    outs = []
    for t in range(x["u"].shape[-1]):
        out, state = selective_state_update(
            state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t],
            D=None if "D" in drop else x["D"], z=None if "z" in drop else x["z"][..., t],
            dt_bias=None if "delta_bias" in drop else x["delta_bias"],
            dt_softplus="delta_bias" not in drop,
        )
        outs.append(out)
    return torch.stack(outs, -1), state


@pytest.mark.parametrize("groups", [None, 1, 2])
def test_steps_equal_the_scan(groups):
    x = scan_inputs(2, 4, 3, 19, groups=groups, seed=2)
    out, state = step_through(x)
    ref, ref_state = selective_scan_reference(**x, delta_softplus=True, return_final_state=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, ref_state, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("drop", ["D", "z", "delta_bias"])
def test_step_optional_arguments(drop):
    x = scan_inputs(1, 3, 2, 7, seed=3)
    out, state = step_through(x, drop=(drop,))
    kw = dict(x)
    kw[drop] = None
    ref, ref_state = selective_scan_reference(**kw, delta_softplus=drop != "delta_bias",
                                              return_final_state=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(state, ref_state)


def test_step_fp32_matches_chunked_scan():
    x = scan_inputs(1, 8, 16, 40, seed=4, dtype=torch.float32)
    out, state = step_through(x)
    ref, ref_state = selective_scan(**x, delta_softplus=True, return_final_state=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, ref_state, rtol=1e-5, atol=1e-5)


def test_step_bf16_inputs_keep_fp32_state():
    x = scan_inputs(1, 4, 2, 1, seed=5, dtype=torch.float32)
    out, state = selective_state_update(
        x["initial_state"], x["u"][..., 0].bfloat16(), x["delta"][..., 0].bfloat16(), x["A"],
        x["B"][..., 0].bfloat16(), x["C"][..., 0].bfloat16(), x["D"], x["z"][..., 0].bfloat16())
    assert out.dtype == torch.bfloat16 and state.dtype == torch.float32


def test_step_gradcheck():
    x = scan_inputs(1, 2, 2, 1, groups=1, seed=6)
    names = ["initial_state", "u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    tensors = [(x[n][..., 0] if n in ("u", "delta", "B", "C", "z") else x[n]).clone()
               .requires_grad_(True) for n in names]

    def fn(state, u, dt, A, B, C, D, z, bias):
        return selective_state_update(state, u, dt, A, B, C, D, z, bias, dt_softplus=True)

    assert torch.autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=torch.zeros(2, 4, 1)), "x must be"),
        (dict(dt=torch.zeros(2, 3)), "dt must have"),
        (dict(A=torch.zeros(3, 5)), "A must be"),
        (dict(state=torch.zeros(2, 4, 3)), "state must be"),
        (dict(B=torch.zeros(2, 4)), "B must be"),
        (dict(B=torch.zeros(2, 3, 5), C=torch.zeros(2, 3, 5)), "not divisible"),
        (dict(D=torch.zeros(2)), "D must be"),
        (dict(z=torch.zeros(2, 5)), "z must have"),
    ],
)
def test_step_validation(change, message):
    args = dict(state=torch.zeros(2, 4, 5), x=torch.zeros(2, 4), dt=torch.zeros(2, 4),
                A=torch.zeros(4, 5), B=torch.zeros(2, 5), C=torch.zeros(2, 5))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        selective_state_update(**args)
