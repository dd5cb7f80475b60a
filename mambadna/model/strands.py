"""Both strands of DNA through one network: reverse complements of tokens and hidden states,
the heads of an RC-equivariant model, and pooling over real positions.

An ``rc_equivariant`` model (Caduceus-PS parameter sharing, over a causal Mamba) runs its
blocks, with the same weights, on each row and on the row's reverse complement, as two halves
of one batch. Its hidden state at position t of a row of real length n is the pair::

    hidden[t] = [h(x)[t], h(rc x)[n-1-t]]                       (batch, L, 2 * d_model)

The forward half has read bases 0..t, the reverse half bases t..n-1 (on the other strand).
Reverse-complementing the input flips this in position and swaps its halves, exactly:
``hidden(rc x)[n-1-t] = swap_halves(hidden(x)[t])``. The heads combine the halves:

- next-base logits at t (they predict base t+1): ``W h_fwd[t] + W' h_rc[t+2]``, W the tied
  embedding and W' its rows permuted by the complement (A<->T, C<->G). The reverse half at t+2
  has read bases t+2..n-1, so no logit ever sees the base it predicts: next-base pretraining
  (``lm_loss``) works unchanged, and each base is predicted from both of its sides.
- base logits at t (they predict base t from both sides): ``W h_fwd[t-1] + W' h_rc[t+1]``.
  They are equivariant: ``base_logits(rc x) = flip(complement(base_logits(x)))``.
- pooling: each half pooled over its strand's real positions ("last" = the state that has
  read the whole row on that strand), the two averaged; the result is invariant.

Caduceus-PS does the same over BiMamba: there too the halves never mix inside the blocks, only
in the heads. At inference a pooled embedding of an equivariant model equals the strand average
(``rc_average``) of the same weights; the difference is in training, where both strands are
always seen together, and in the LM head, where each position gets context from both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mambadna.alphabet import A, C, G, T
from mambadna.errors import ConfigError, InputError

POOL_MODES = ("mean", "max", "last")


def complement_index(vocab_size: int) -> torch.Tensor:
    """Token id -> its complement's id (vocab_size,) int64: A<->T, C<->G, the rest kept."""
    table = torch.arange(vocab_size)
    table[[A, C, G, T]] = torch.tensor([T, G, C, A])
    return table


def flip_positions(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse x (batch, L, ...) along L within each row's first lengths[b] positions (right
    padding stays at the end; None: the whole row). Applying it twice gives x back."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (batch, L)
    index = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def reverse_complement_tokens(tokens: torch.Tensor, lengths: torch.Tensor | None,
                              complement: torch.Tensor) -> torch.Tensor:
    """The reverse complement of right-padded tokens (batch, L) within their real lengths."""
    return flip_positions(complement[tokens], lengths)


def join_strands(hidden: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Hidden states (2 * batch, L, d) of the rows then their reverse complements -> the
    equivariant pair (batch, L, 2 * d), the reverse half aligned to forward positions."""
    forward, reverse = hidden.chunk(2)
    return torch.cat([forward, flip_positions(reverse, lengths)], dim=-1)


def _shifted(x: torch.Tensor, shift: int, lengths: torch.Tensor | None) -> torch.Tensor:
    """out[:, t] = x[:, t + shift] where 0 <= t + shift < length, else 0 (x: (batch, L, V))."""
    length = x.shape[1]
    if shift > 0:
        out = F.pad(x[:, shift:], (0, 0, 0, min(shift, length)))
    else:
        out = F.pad(x[:, :length + shift], (0, 0, min(-shift, length), 0))
    if lengths is None:
        lengths = torch.full((x.shape[0],), length, device=x.device)
    t = torch.arange(length, device=x.device)
    keep = (t + shift >= 0) & (t + shift < lengths[:, None])  # (batch, L)
    return out * keep[..., None].to(out.dtype)


def strand_logits(hidden: torch.Tensor, weight: torch.Tensor, complement: torch.Tensor):
    """(forward, reverse) LM logits (batch, L, V) fp32 of the pair ``hidden`` (batch, L, 2d):
    forward[t] predicts base t+1, reverse[t] (complemented back) predicts base t-1."""
    d_model = weight.shape[1]
    forward = F.linear(hidden[..., :d_model], weight).float()
    reverse = F.linear(hidden[..., d_model:], weight[complement]).float()
    return forward, reverse


def next_base_logits(hidden, lengths, weight, complement) -> torch.Tensor:
    """Logits (batch, L, V) of base t+1 at t: forward half at t + reverse half at t+2."""
    forward, reverse = strand_logits(hidden, weight, complement)
    return forward + _shifted(reverse, 2, lengths)


def base_logits(hidden, lengths, weight, complement) -> torch.Tensor:
    """Logits (batch, L, V) of base t at t from both sides: forward half at t-1 + reverse half
    at t+1 (one side only at a row's ends). Equivariant (see the module docstring)."""
    forward, reverse = strand_logits(hidden, weight, complement)
    return _shifted(forward, -1, lengths) + _shifted(reverse, 1, lengths)


def _pool_one(hidden, lengths, mode, mask, last) -> torch.Tensor:
    if mode == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask[..., None].to(hidden.dtype)  # (batch, L, 1)
    if mode == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    return hidden.masked_fill(~mask[..., None], float("-inf")).amax(1)


def pool(hidden: torch.Tensor, lengths: torch.Tensor | None = None, mode: str = "mean",
         mask: torch.Tensor | None = None, strands: int = 1) -> torch.Tensor:
    """Pool hidden (batch, L, strands * d) over real positions -> (batch, d).

    mode: "mean" or "max" over the positions of ``mask`` (batch, L) bool (default: the real
    ones), or "last", the state at the last real position (of each strand: the reverse half's
    is at position 0). lengths (batch,): real lengths of right-padded rows (None: all L).
    strands: 2 for the pair of an RC-equivariant model, whose halves are pooled each on its
    strand and averaged.
    """
    if mode not in POOL_MODES:
        raise ConfigError(f"pooling must be one of {', '.join(POOL_MODES)}, got {mode!r}")
    batch, length = hidden.shape[:2]
    if lengths is None:
        lengths = torch.full((batch,), length, device=hidden.device)
    lengths = torch.as_tensor(lengths, device=hidden.device).long()
    if lengths.shape != (batch,) or bool(((lengths < 1) | (lengths > length)).any()):
        raise InputError(f"lengths must be (batch={batch},) with values in [1, {length}], "
                         f"got {lengths.tolist()}")
    if mask is None:
        mask = torch.arange(length, device=hidden.device) < lengths[:, None]
    halves = hidden.chunk(strands, dim=-1)
    pooled = _pool_one(halves[0], lengths, mode, mask, lengths - 1)
    if strands == 2:
        pooled = (pooled + _pool_one(halves[1], lengths, mode, mask, 0)) / 2
    return pooled
