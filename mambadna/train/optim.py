"""AdamW with the Mamba paper's settings and a cosine learning-rate schedule with linear warmup.

Weight decay applies to matrices only: parameters the model flags ``_no_weight_decay`` (A_log,
D, the dt bias), every bias and every other 1-D parameter (norm weights) are not decayed, as in
the reference Mamba training code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# The SSM parameters by name as well: wrappers such as FSDP hand out parameter views that lose
# the model's ``_no_weight_decay`` flag.
NO_DECAY_NAMES = ("A_log", "D")


def decay_groups(model: nn.Module, weight_decay: float, *, scaled: str | None = None,
                 lr: float | None = None, scale: float = 1.0) -> list[dict]:
    """AdamW parameter groups: decayed matrices, and the rest with weight_decay 0.

    scaled / lr / scale: parameters whose name starts with ``scaled`` (e.g. "classifier.")
    get groups of their own with learning rate ``lr * scale``; empty groups are dropped.
    """
    groups: dict[tuple[bool, bool], list] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # tied weights are listed once
            continue
        seen.add(id(param))
        skip = (getattr(param, "_no_weight_decay", False) or param.ndim < 2
                or name.endswith(".bias") or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES)
        special = scaled is not None and scale != 1.0 and name.startswith(scaled)
        groups.setdefault((special, skip), []).append(param)
    out = [{"params": groups.get((False, False), []), "weight_decay": weight_decay},
           {"params": groups.get((False, True), []), "weight_decay": 0.0}]
    for skip in (False, True):
        if groups.get((True, skip)):
            out.append({"params": groups[(True, skip)], "lr": lr * scale,
                        "weight_decay": 0.0 if skip else weight_decay})
    return out


def adamw(params: Iterable[dict], lr: float, betas: tuple[float, float],
          fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW; by default (``fused=None``) the fused implementation when every parameter is on
    a GPU. A fused AdamW unscales fp16 gradients inside its step, so a caller that clips under
    a gradient scaler must pass ``fused=False`` (see ClassifierModule / LanguageModelModule)."""
    groups = list(params)
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused or None)


def cosine_with_warmup(max_steps: int, warmup_fraction: float, min_ratio: float):
    """LR multiplier per optimizer step: linear 0 -> 1 over the warmup, cosine 1 -> min_ratio.

    The warmup is ``round(warmup_fraction * max_steps)`` steps; step 0 gets 1/(warmup+1) so the
    first update is not wasted on a zero learning rate.
    """
    warmup = max(0, round(warmup_fraction * max_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
