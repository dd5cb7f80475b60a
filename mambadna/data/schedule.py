"""Sequence-length warmup: stages that double the window length up to the target.

The Mamba and HyenaDNA papers train long contexts by starting short (2^10 bases) and doubling
the length in stages, holding the tokens per optimizer step constant: each time the length
doubles, the batch halves. The schedule is a pure function of the optimizer step, so datasets
and workers compute the current stage themselves (no worker rebuild, nothing to restore on
resume but the step counter). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from mambadna.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    """One stage: windows of ``seq_len`` bases, ``batch_size`` of them per device micro-batch.

    Covers optimizer steps ``[start_step, end_step)``; ``end_step`` is None for the last stage.
    """

    index: int
    seq_len: int
    batch_size: int
    start_step: int
    end_step: int | None

    @property
    def tokens(self) -> int:
        """Bases per device micro-batch (the same in every stage)."""
        return self.seq_len * self.batch_size


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class SeqLenSchedule:
    """Stages from ``start_len`` doubling to ``seq_len``, each ``stage_steps`` optimizer steps.

    seq_len / batch_size: the target window length and the per-device micro-batch at it.
    start_len: first window length; None (or == seq_len) means no warmup: one stage.
    stage_steps: optimizer steps of every stage but the last (which runs to the end).
    max_steps: when given, the target length must be reached before it.
    Stage k (0-based, K = log2(seq_len / start_len)) has length start_len * 2^k and batch
    batch_size * 2^(K - k), so every micro-batch holds seq_len * batch_size bases.
    """

    seq_len: int
    batch_size: int
    start_len: int | None = None
    stage_steps: int = 0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.start_len is None or self.start_len == self.seq_len:
            return
        start, target = self.start_len, self.seq_len
        if not isinstance(start, int) or start < 1:
            raise ConfigError(f"warmup start length must be a positive integer, got {start!r}")
        if start > target or target % start or not _is_power_of_two(target // start):
            lower = start * 2 ** max(0, (target // start).bit_length() - 1)
            raise ConfigError(
                f"seq-len {target} is not reachable by the sequence-length warmup: it doubles "
                f"from {start} ({start}, {2 * start}, {4 * start}, ...)",
                fix=f"use --seq-len {start} * 2^k (e.g. {max(lower, start)} or {2 * lower}), "
                    "or a --warmup-start that divides it by a power of two")
        if self.stage_steps < 1:
            raise ConfigError(f"warmup stages need at least 1 step each, got {self.stage_steps}",
                              fix="set --warmup-stage to a positive number of steps or epochs")
        warmup_steps = self.n_warmup_stages * self.stage_steps
        if self.max_steps is not None and warmup_steps >= self.max_steps:
            raise ConfigError(
                f"seq-len {target} is not reachable: the warmup from {start} takes "
                f"{self.n_warmup_stages} stages x {self.stage_steps} steps = {warmup_steps} "
                f"steps, but max-steps is {self.max_steps}",
                fix="raise --max-steps, shorten --warmup-stage or raise --warmup-start")
        if self.batch_size * (target // start) > 2**31:
            raise ConfigError("the warmup's first stage would need a batch of more than 2^31 "
                              "windows", fix="raise --warmup-start")

    @property
    def n_warmup_stages(self) -> int:
        """Stages before the target length (0 without warmup)."""
        if self.start_len is None or self.start_len == self.seq_len:
            return 0
        return (self.seq_len // self.start_len).bit_length() - 1

    @cached_property
    def stages(self) -> list[Stage]:
        """Every stage in order; the last one has the target length and no end."""
        k_last = self.n_warmup_stages
        start = self.start_len if k_last else self.seq_len
        out = []
        for k in range(k_last + 1):
            end = (k + 1) * self.stage_steps if k < k_last else None
            out.append(Stage(k, start * 2**k, self.batch_size * 2 ** (k_last - k),
                             k * self.stage_steps, end))
        return out

    def stage_at(self, step: int) -> Stage:
        """The stage that optimizer step ``step`` (0-based) trains in."""
        k = min(step // self.stage_steps, self.n_warmup_stages) if self.stage_steps else 0
        return self.stages[k]

    def describe(self) -> str:
        """One line per stage, for logs and the config file."""
        lines = []
        for s in self.stages:
            until = f"steps {s.start_step}-{s.end_step - 1}" if s.end_step else (
                f"from step {s.start_step}")
            lines.append(f"stage {s.index}: seq_len {s.seq_len}, batch {s.batch_size}, {until}")
        return "\n".join(lines)
