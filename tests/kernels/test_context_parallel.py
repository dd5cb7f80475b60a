"""Context parallelism: the carry combination alone (one process), and the scan, the conv and
the whole model split over 2 and 4 gloo processes against one process (values and
gradients)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mambadna.kernels import selective_scan
from mambadna.kernels.context_parallel import (
    ContextGroup,
    combine_carries,
    combine_carry_grads,
    context_parallel_conv1d,
    context_parallel_scan,
    segment_log_decay,
)

WORKER = Path(__file__).with_name("context_parallel_worker.py")


def _scan_inputs(length, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch, dim, n = 2, 3, 4
    f64 = dict(dtype=torch.float64)
    u, delta = (torch.randn(batch, dim, length, generator=g, **f64) for _ in range(2))
    A = -torch.rand(dim, n, generator=g, **f64) * 2 - 0.1
    B, C = (torch.randn(batch, n, length, generator=g, **f64) for _ in range(2))
    bias = torch.randn(dim, generator=g, **f64) * 0.3
    return u, delta, A, B, C, bias


def test_carry_combination_gives_every_segments_true_start_state_and_gradients():
    """Segments scanned from zero, combined: their start states are the whole scan's states at
    the cuts, and the reverse pass gives the pairs' gradients that autograd gives."""
    length, cuts = 40, [0, 7, 8, 21, 33, 40]  # uneven, one of a single position
    u, delta, A, B, C, bias = _scan_inputs(length)
    pairs = []
    for lo, hi in itertools.pairwise(cuts):
        _, final = selective_scan(u[..., lo:hi], delta[..., lo:hi], A, B[..., lo:hi],
                                  C[..., lo:hi], delta_bias=bias, delta_softplus=True,
                                  return_final_state=True, backend="loop")
        pairs.append((segment_log_decay(delta[..., lo:hi], A, bias, True), final))
    log_decay = torch.stack([p[0] for p in pairs]).requires_grad_()
    finals = torch.stack([p[1] for p in pairs]).requires_grad_()
    states = combine_carries(log_decay, finals)
    for r, lo in enumerate(cuts[:-1]):
        if lo == 0:
            torch.testing.assert_close(states[r], torch.zeros_like(states[r]))
            continue
        _, whole = selective_scan(u[..., :lo], delta[..., :lo], A, B[..., :lo], C[..., :lo],
                                  delta_bias=bias, delta_softplus=True, return_final_state=True,
                                  backend="loop")
        torch.testing.assert_close(states[r], whole, rtol=1e-12, atol=1e-12)
    grads = torch.randn_like(states)
    want = torch.autograd.grad(states, (log_decay, finals), grads)
    got = combine_carry_grads(log_decay.detach(), states.detach(), grads)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_one_rank_is_the_plain_op_and_misuse_is_refused():
    u, delta, A, B, C, bias = _scan_inputs(9)
    single = ContextGroup.single()
    got = context_parallel_scan(u, delta, A, B, C, delta_bias=bias, delta_softplus=True,
                                context=single)
    want = selective_scan(u, delta, A, B, C, delta_bias=bias, delta_softplus=True)
    torch.testing.assert_close(got, want)
    second = ContextGroup(None, 1, 2)
    with pytest.raises(ValueError, match="belongs to rank 0"):
        context_parallel_scan(u, delta, A, B, C, initial_state=torch.zeros(2, 3, 4,
                                                                           dtype=torch.float64),
                              context=second)
    with pytest.raises(TypeError, match="ContextGroup"):
        context_parallel_conv1d(u, torch.ones(3, 4, dtype=torch.float64), context="world")
    with pytest.raises(ValueError, match="at least width-1 = 3"):
        context_parallel_conv1d(u[..., :2], torch.ones(3, 4, dtype=torch.float64),
                                context=second)
    assert [ContextGroup(None, r, 3).bounds(10) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


def _launch(case: str, world: int, tmp_path, **environ: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **environ}
    init = tmp_path / f"init-{case}-{world}"
    procs = [subprocess.Popen([sys.executable, str(WORKER), case, str(rank), str(world),
                               str(init)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) for rank in range(world)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    failed = [f"rank {r}:\n{out[-3000:]}" for r, (p, out) in enumerate(zip(procs, outputs))
              if p.returncode != 0]
    assert not failed, "\n".join(failed)


@pytest.mark.slow  # 3-17 s: 2-4 processes on 2 cores
@pytest.mark.parametrize("world", [2, 4])
def test_scan_and_conv_split_over_ranks_equal_one_process(world, tmp_path):
    _launch("op", world, tmp_path)


@pytest.mark.slow  # 3-17 s: 2-4 processes on 2 cores
@pytest.mark.parametrize("world", [2, 4])
def test_whole_model_split_over_ranks_equals_one_process(world, tmp_path):
    _launch("model", world, tmp_path)


@pytest.mark.slow  # ~12 s: 2 processes
def test_whole_model_with_activation_checkpointing_split_over_ranks(tmp_path):
    _launch("model-checkpointing", 2, tmp_path)


@pytest.mark.slow  # ~6 s: 2 processes
def test_classifier_pooled_over_ranks_equals_one_process(tmp_path):
    _launch("classify", 2, tmp_path)


@pytest.mark.slow  # ~12 s: the Triton interpreter in 2 processes
def test_scan_split_over_ranks_with_the_triton_kernels(tmp_path):
    """The Triton kernels (interpreted) as the scan of every segment: initial state in, final
    state out and both gradients, as on a GPU."""
    pytest.importorskip("triton")
    _launch("op-triton", 2, tmp_path, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1",
            PYTHONWARNINGS="ignore")
