"""The compiled CPU selective scan against the per-position reference: values and gradients."""

import sys

import pytest
import torch

from mambadna.kernels import selective_scan
from mambadna.kernels.selective_scan import cpu

# The kernel is built at install wherever a C compiler exists; on Linux (CI) it must be there,
# or the CPU user silently gets the slow path.
needs_kernel = pytest.mark.skipif(
    not cpu.available() and not sys.platform.startswith("linux"),
    reason="compiled CPU scan not built on this platform")


def _inputs(batch, dim, length, n_state, groups, seed, gate=True, state=True):
    g = torch.Generator().manual_seed(seed)
    bc_shape = (batch, n_state, length) if groups == 0 else (batch, groups, n_state, length)
    return dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=torch.randn(batch, dim, length, generator=g) * 0.5,
        A=-torch.rand(dim, n_state, generator=g) * 4 - 0.1,
        B=torch.randn(*bc_shape, generator=g),
        C=torch.randn(*bc_shape, generator=g),
        D=torch.randn(dim, generator=g),
        z=torch.randn(batch, dim, length, generator=g) if gate else None,
        delta_bias=torch.randn(dim, generator=g) * 0.3,
        initial_state=torch.randn(batch, dim, n_state, generator=g) if state else None,
    )


def _run(inputs, backend, dtype):
    leaves = {k: None if v is None else v.detach().to(dtype).clone().requires_grad_(True)
              for k, v in inputs.items()}
    out, last = selective_scan(**leaves, delta_softplus=True, return_final_state=True,
                               backend=backend)
    g = torch.Generator().manual_seed(99)
    w_out = torch.randn(out.shape, generator=g).to(dtype)
    w_last = torch.randn(last.shape, generator=g).to(dtype)
    ((out * w_out).sum() + (last * w_last).sum()).backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return out, last, grads


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@needs_kernel
def test_kernel_is_built_on_linux():
    assert cpu.available(), "the compiled CPU scan was not built: is a C compiler installed?"


@needs_kernel
@pytest.mark.parametrize("batch,dim,length,n_state,groups", [
    (2, 6, 1, 4, 0),        # one position
    (1, 5, 63, 16, 0),      # under one 64-position chunk
    (2, 8, 130, 16, 0),     # chunk boundary crossed twice, ragged last chunk
    (3, 12, 97, 7, 3),      # grouped B/C, odd N
    (1, 4, 200, 64, 1),     # the largest N the kernel takes
])
def test_values_and_gradients_match_the_reference(batch, dim, length, n_state, groups):
    inputs = _inputs(batch, dim, length, n_state, groups, seed=length + n_state)
    out, last, grads = _run(inputs, "compiled", torch.float32)
    ref_out, ref_last, ref_grads = _run(inputs, "loop", torch.float64)
    assert _rel(out, ref_out) < 1e-5
    assert _rel(last, ref_last) < 1e-5
    for name, ref in ref_grads.items():
        assert _rel(grads[name], ref) < 1e-4, name


@needs_kernel
def test_without_gate_or_state_and_under_no_grad():
    inputs = _inputs(2, 16, 300, 16, 0, seed=3, gate=False, state=False)
    with torch.no_grad():
        out = selective_scan(**inputs, delta_softplus=True, backend="compiled")
    ref = selective_scan(**{k: None if v is None else v.double() for k, v in inputs.items()},
                         delta_softplus=True, backend="loop")
    assert _rel(out, ref) < 1e-5


@needs_kernel
def test_threads_do_not_change_the_result():
    inputs = _inputs(4, 64, 1024, 16, 0, seed=5)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(_run(inputs, "compiled", torch.float32))
    finally:
        torch.set_num_threads(before)
    for out, last, grads in results[1:]:
        # torch's own elementwise ops around the kernel round their per-thread tails differently.
        assert _rel(out, results[0][0]) < 1e-6 and _rel(last, results[0][1]) < 1e-6
        for name, g in grads.items():
            # Sums over rows are added per thread, so only their rounding may differ.
            assert _rel(g, results[0][2][name]) < 1e-6, name


@needs_kernel
def test_state_carried_across_calls_is_exact():
    inputs = _inputs(1, 8, 256, 16, 0, seed=7, state=False)
    full = selective_scan(**inputs, delta_softplus=True, backend="compiled")
    cut = 100
    first = {k: v if v is None or v.dim() < 3 else v[..., :cut] for k, v in inputs.items()}
    second = {k: v if v is None or v.dim() < 3 else v[..., cut:] for k, v in inputs.items()}
    out1, state = selective_scan(**first, delta_softplus=True, return_final_state=True,
                                 backend="compiled")
    out2 = selective_scan(**{**second, "initial_state": state}, delta_softplus=True,
                          backend="compiled")
    assert torch.allclose(torch.cat([out1, out2], -1), full, rtol=1e-5, atol=1e-6)


def test_auto_picks_the_compiled_kernel_on_cpu_and_the_reference_for_fp64(monkeypatch):
    inputs = _inputs(1, 4, 40, 8, 0, seed=11)
    fp64 = {k: None if v is None else v.double() for k, v in inputs.items()}
    # fp64 goes to the chunked reference: exact to fp64 rounding against the loop.
    assert _rel(selective_scan(**fp64), selective_scan(**fp64, backend="loop")) < 1e-12
    if cpu.available():
        assert torch.equal(selective_scan(**inputs), selective_scan(**inputs, backend="compiled"))
    monkeypatch.setenv("MAMBADNA_CPU_SCAN", "0")
    assert torch.equal(selective_scan(**inputs), selective_scan(**inputs, backend="reference"))


def test_compiled_backend_refuses_what_it_cannot_take():
    inputs = _inputs(1, 4, 10, 8, 0, seed=1)
    with pytest.raises(ValueError, match="fp32/bf16/fp16"):
        selective_scan(**{k: None if v is None else v.double() for k, v in inputs.items()},
                       backend="compiled")
