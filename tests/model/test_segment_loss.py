"""``segment_lm_loss``: the shares of a window's segments add up to ``lm_loss`` of the window,
PAD and N targets included, and refuse logits that are not the rank's segment. (No
communication: the shares of three "ranks" are computed in one process.)"""

from __future__ import annotations

import pytest
import torch

from mambadna.alphabet import PAD, N
from mambadna.errors import InputError
from mambadna.model import ContextGroup, lm_loss, segment_lm_loss


def test_segment_shares_add_up_to_the_window_loss_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, 9, (2, 17), generator=g)
    tokens[0, 5] = N  # not counted as a target
    tokens[1, 14:] = PAD  # nor padding
    logits = torch.randn(2, 17, 16, generator=g, requires_grad=True)
    want = lm_loss(logits, tokens)
    (want_grad,) = torch.autograd.grad(want, logits)
    total, grad, counted = 0.0, torch.zeros_like(logits), 0
    for rank in range(3):
        context = ContextGroup(None, rank, 3)
        start, stop = context.bounds(17)
        part = logits[:, start:stop]
        share, loss_sum, n = segment_lm_loss(part, tokens, context)
        (g_part,) = torch.autograd.grad(share, part)
        total, counted = total + share, counted + int(n)
        grad[:, start:stop] += g_part
        assert float(share.detach()) == pytest.approx(float(loss_sum.detach()) / 28, rel=1e-6)
    assert counted == 28  # 2 x 16 targets, less one N, less three PAD
    torch.testing.assert_close(total, want)
    torch.testing.assert_close(grad, want_grad)
    with pytest.raises(InputError, match="segment"):
        segment_lm_loss(logits, tokens, ContextGroup(None, 1, 3))
