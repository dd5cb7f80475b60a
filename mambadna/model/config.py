"""ModelConfig: the sizes and initialisation settings of a MambaDNA network, with presets.

Presets (parameter counts include the tied embedding):

- ``tiny``: d_model 64, 4 blocks, ~131k parameters; trains in seconds on a laptop CPU (tests,
  the demo).
- ``paper-1.4m``: d_model 128, 12 Mamba blocks, ~1.40M parameters (the Mamba paper's DNA model
  of "6 layers": the paper counts two Mamba blocks per layer).
- ``paper-7m``: d_model 256, 16 Mamba blocks, ~7.01M parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from mambadna.alphabet import VOCAB_SIZE
from mambadna.errors import ConfigError

POOLINGS = ("last", "mean")

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_layer=4),
    "paper-1.4m": dict(d_model=128, n_layer=12),
    "paper-7m": dict(d_model=256, n_layer=16),
}


@dataclass
class ModelConfig:
    """Sizes of a MambaDNA network (Mamba-1 blocks) and how its weights are initialised."""

    d_model: int = 128
    """Width of the residual stream (embedding size)."""
    n_layer: int = 12
    """Number of Mamba blocks."""
    d_state: int = 16
    """SSM state size N per channel."""
    d_conv: int = 4
    """Width of the causal depthwise convolution."""
    expand: int = 2
    """d_inner = expand * d_model channels inside the mixer."""
    dt_rank: int | str = "auto"
    """Rank of the dt projection; "auto" = ceil(d_model / 16)."""
    vocab_size: int = VOCAB_SIZE
    """Token vocabulary (DNA tokens padded to 16); the LM head is tied to the embedding."""
    num_labels: int = 0
    """Classes of the sequence-classification head; 0 = language model only."""
    pooling: str = "last"
    """How the classification head reads a sequence: "last" real position or "mean" of them."""
    bidirectional: bool = False
    """BiMamba (Caduceus): each mixer also scans the reversed sequence; cannot stream."""
    rc_equivariant: bool = False
    """Reverse-complement equivariant (Caduceus-PS parameter sharing): the same weights read
    both strands and the heads combine them; no extra parameters; cannot stream."""
    gradient_checkpointing: bool = False
    """Recompute each block in the backward pass (training mode only) to save memory."""
    rms_norm_eps: float = 1e-5
    """Epsilon of the RMSNorms."""
    dt_min: float = 1e-3
    """dt is initialised log-uniform in [dt_min, dt_max] (through the dt_proj bias)."""
    dt_max: float = 1e-1
    """Upper end of the dt initialisation range."""
    dt_init_floor: float = 1e-4
    """Smallest dt the initialisation may produce."""
    dt_scale: float = 1.0
    """dt_proj weights are uniform in +-dt_scale * dt_rank^-0.5."""
    initializer_range: float = 0.02
    """Standard deviation of the embedding initialisation."""
    rescale_prenorm_residual: bool = True
    """Scale out_proj's initial weights by 1/sqrt(n_layer) (GPT-2 style residual scaling)."""

    def __post_init__(self) -> None:
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        positive = ("d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}"
                                  + (' (or "auto")' if name == "dt_rank" else ""))
        if not isinstance(self.vocab_size, int) or self.vocab_size < VOCAB_SIZE:
            raise ConfigError(f"ModelConfig.vocab_size must be an integer >= {VOCAB_SIZE} (the "
                              f"DNA token table), got {self.vocab_size!r}")
        if not isinstance(self.num_labels, int) or self.num_labels < 0 or self.num_labels == 1:
            raise ConfigError(f"ModelConfig.num_labels must be 0 (no classifier) or >= 2, got "
                              f"{self.num_labels!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"ModelConfig.pooling must be one of {POOLINGS}, got "
                              f"{self.pooling!r}")
        for name in ("bidirectional", "rc_equivariant", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ModelConfig.{name} must be true or false, got "
                                  f"{getattr(self, name)!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"ModelConfig needs 0 < dt_min <= dt_max, got dt_min="
                              f"{self.dt_min}, dt_max={self.dt_max}")

    @property
    def d_inner(self) -> int:
        """Channels inside the mixer: expand * d_model."""
        return self.expand * self.d_model

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A preset ("tiny", "paper-1.4m", "paper-7m") with some fields overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}",
                              fix=f"use one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict of every field (dt_rank resolved to an integer)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are a ConfigError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s) {', '.join(map(repr, unknown))}",
                              fix=f"valid keys are: {', '.join(sorted(known))}")
        return cls(**data)
