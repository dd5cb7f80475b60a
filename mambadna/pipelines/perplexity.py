"""Bits per base of a language model on held-out sequences, window by window.

``bits_per_base(model, inputs, window)`` cuts every record into non-overlapping windows of
``window`` bases, runs the model on each window from an empty state, and averages the next-base
cross-entropy (in bits) over every predicted position whose target is a base (N and padding are
not counted, as in training). Each window starts without context, so a shorter window means
less context on average: comparing windows of 2^10..2^20 bases over the SAME bases (``bases``
caps every record at the same prefix for every window) measures how much the model gains from
context, the pretraining side of the Mamba paper's context-length study.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from mambadna.alphabet import PAD, N
from mambadna.errors import ConfigError
from mambadna.model import MambaDNA, load_model

LN2 = math.log(2)


@dataclass
class Perplexity:
    """Bits per base over ``n_predicted`` next-base predictions in ``n_windows`` windows."""

    window: int
    bits_per_base: float
    perplexity: float
    n_windows: int
    n_predicted: int

    def as_dict(self) -> dict:
        return dict(window=self.window, bits_per_base=self.bits_per_base,
                    perplexity=self.perplexity, n_windows=self.n_windows,
                    n_predicted=self.n_predicted)


def _windows(inputs: Sequence[str | os.PathLike], window: int, bases: int | None,
             read_opts: dict) -> list[np.ndarray]:
    from mambadna.io import read_tokens

    out: list[np.ndarray] = []
    for path in inputs:
        for _name, _source, tokens in read_tokens(path, **read_opts):
            usable = len(tokens) if bases is None else min(len(tokens), bases)
            out += [np.asarray(tokens[s:s + window]) for s in range(0, usable - window + 1,
                                                                     window)]
    return out


def bits_per_base(model: MambaDNA | str | os.PathLike, inputs: Sequence[str | os.PathLike],
                  window: int, *, bases: int | None = None, batch_size: int = 1,
                  device: str | None = None, **read_opts) -> Perplexity:
    """Next-base bits per base of ``model`` on the records of ``inputs`` in windows of
    ``window`` bases (see the module docstring).

    bases: use only the first ``bases`` bases of every record (the same bases for every
    window length when it is a multiple of all of them). batch_size: windows per forward
    pass. device: default CUDA when available; bf16 autocast there, fp32 on CPU.
    """
    if window < 2:
        raise ConfigError(f"window must be at least 2 bases, got {window}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(model, MambaDNA):
        model = load_model(model, device=device)
    model = model.to(device).eval()
    windows = _windows(inputs, window, bases, read_opts)
    if not windows:
        raise ConfigError(f"no record of {', '.join(map(str, inputs))} holds a window of "
                          f"{window} bases" + (f" within its first {bases}" if bases else ""),
                          fix="use a shorter window or longer held-out sequences")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda")
                else nullcontext())
    total, counted = 0.0, 0
    with torch.no_grad(), autocast:
        for i in range(0, len(windows), batch_size):
            tokens = torch.from_numpy(np.stack(windows[i:i + batch_size])).to(device).long()
            logits = model(tokens)[:, :-1].float()  # (b, L-1, vocab) predicts tokens[:, 1:]
            targets = tokens[:, 1:]
            keep = (targets != PAD) & (targets != N)
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            total += float((losses * keep.reshape(-1)).double().sum())
            counted += int(keep.sum())
    bits = total / max(counted, 1) / LN2
    return Perplexity(window, bits, 2.0 ** bits, len(windows), counted)
