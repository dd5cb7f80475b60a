"""The compiled CPU causal conv1d against the F.conv1d reference: values and gradients."""

import sys

import pytest
import torch

from mambadna.kernels.conv1d import causal_conv1d, causal_conv1d_update, cpu

# Built at install wherever a C compiler exists; on Linux (CI) it must be there.
needs_kernel = pytest.mark.skipif(
    not cpu.available() and not sys.platform.startswith("linux"),
    reason="compiled CPU conv not built on this platform")


def _inputs(batch, dim, length, width, seed, state=True, bias=True, wide=False):
    g = torch.Generator().manual_seed(seed)
    # wide: x is the first half of a (batch, 2 dim, L) tensor, as the mixer's x of in_proj's
    # output, so the kernel reads a channel slice with the wider tensor's strides.
    x = torch.randn(batch, 2 * dim if wide else dim, length, generator=g, dtype=torch.float64)
    return dict(
        x=x, weight=torch.randn(dim, width, generator=g, dtype=torch.float64),
        bias=torch.randn(dim, generator=g, dtype=torch.float64) if bias else None,
        initial_state=(torch.randn(batch, dim, width - 1, generator=g, dtype=torch.float64)
                       if state else None))


def _run(inputs, backend, dtype, activation, dim):
    leaves = {k: None if v is None else v.detach().to(dtype).clone().requires_grad_(True)
              for k, v in inputs.items()}
    x = leaves["x"][:, :dim]
    out, final = causal_conv1d(x, leaves["weight"], leaves["bias"],
                               initial_state=leaves["initial_state"], return_final_state=True,
                               activation=activation, backend=backend)
    g = torch.Generator().manual_seed(99)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    w_final = torch.randn(final.shape, generator=g, dtype=torch.float64).to(dtype)
    ((out * w_out).sum() + (final * w_final).sum()).backward()
    return out, final, {k: v.grad for k, v in leaves.items() if v is not None}


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@needs_kernel
def test_kernel_is_built_on_linux():
    assert cpu.available(), "the compiled CPU conv was not built: is a C compiler installed?"


@needs_kernel
@pytest.mark.parametrize("batch,dim,length,width,state,bias,wide", [
    (2, 3, 1, 4, True, True, False),       # one position: every tap but the last reads the state
    (1, 4, 2, 4, True, False, True),       # L < W - 1: the final state holds state entries too
    (2, 5, 3, 4, False, True, False),      # L = W - 1, zeros before the sequence
    (3, 6, 1500, 4, True, True, True),     # across a 1024-position tile, channel slice
    (2, 4, 2100, 1, False, True, False),   # width 1: no state at all
    (1, 3, 300, 7, True, True, False),     # a wider kernel than the GPU's 4
])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_values_and_gradients_match_the_reference(batch, dim, length, width, state, bias, wide,
                                                  activation):
    inputs = _inputs(batch, dim, length, width, seed=length + width, state=state, bias=bias,
                     wide=wide)
    out, final, grads = _run(inputs, "compiled", torch.float32, activation, dim)
    ref_out, ref_final, ref_grads = _run(inputs, "reference", torch.float64, activation, dim)
    assert out.dtype == final.dtype == torch.float32
    assert _rel(out, ref_out) < 1e-6
    assert final.shape == ref_final.shape and _rel(final, ref_final) < 1e-6
    for name, ref in ref_grads.items():
        assert _rel(grads[name], ref) < 1e-5, name


@needs_kernel
def test_bf16_input_gives_bf16_like_the_reference():
    inputs = _inputs(2, 8, 500, 4, seed=4)
    x, w, b, s = (inputs[k].to(torch.bfloat16) for k in ("x", "weight", "bias", "initial_state"))
    out, final = causal_conv1d(x, w, b, initial_state=s, return_final_state=True,
                               activation="silu", backend="compiled")
    ref = causal_conv1d(x.double(), w.double(), b.double(), initial_state=s.double(),
                        activation="silu", backend="reference")
    assert out.dtype == final.dtype == torch.bfloat16
    assert _rel(out, ref) < 1e-2  # bf16 rounding of the output alone
    assert torch.equal(final, x[..., -3:])


@needs_kernel
def test_threads_do_not_change_the_result():
    inputs = _inputs(4, 32, 4096, 4, seed=5)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(_run(inputs, "compiled", torch.float32, "silu", 32))
    finally:
        torch.set_num_threads(before)
    for out, final, grads in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(final, results[0][1])
        for name, g in grads.items():
            # dw and dbias are added per thread, so only their rounding may differ.
            assert _rel(g, results[0][2][name]) < 1e-6, name


@needs_kernel
def test_state_carried_across_calls_and_one_position_steps_are_exact():
    inputs = _inputs(1, 6, 300, 4, seed=7, state=False)
    x, w, b = (inputs[k].float() for k in ("x", "weight", "bias"))
    full = causal_conv1d(x, w, b, activation="silu", backend="compiled")
    out1, state = causal_conv1d(x[..., :100], w, b, return_final_state=True, activation="silu",
                                backend="compiled")
    out2, state = causal_conv1d(x[..., 100:299], w, b, initial_state=state,
                                return_final_state=True, activation="silu", backend="compiled")
    last, _ = causal_conv1d_update(x[..., 299], state, w, b, activation="silu")
    assert torch.allclose(torch.cat([out1, out2, last[..., None]], -1), full,
                          rtol=1e-6, atol=1e-6)


def test_auto_picks_the_compiled_kernel_on_cpu_and_the_reference_for_fp64(monkeypatch):
    inputs = _inputs(2, 4, 50, 4, seed=11)
    fp32 = {k: v.float() for k, v in inputs.items()}
    if cpu.available():
        assert torch.equal(causal_conv1d(**fp32, activation="silu"),
                           causal_conv1d(**fp32, activation="silu", backend="compiled"))
    assert torch.equal(causal_conv1d(**inputs), causal_conv1d(**inputs, backend="reference"))
    monkeypatch.setenv("MAMBADNA_CPU_CONV", "0")
    assert not cpu.available()
    assert torch.equal(causal_conv1d(**fp32), causal_conv1d(**fp32, backend="reference"))


def test_compiled_backend_refuses_what_it_cannot_take():
    inputs = _inputs(1, 4, 10, 4, seed=1)
    with pytest.raises(ValueError, match="not fp64"):
        causal_conv1d(**inputs, backend="compiled")
