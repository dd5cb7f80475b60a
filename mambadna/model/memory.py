"""Will a model fit a GPU? An estimate from the config's shapes, checked before allocating.

Training needs the fp32 weights, their gradients, AdamW's two moments and the activations the
backward pass keeps; inference needs the weights and the working set of one block. Activation
bytes per token and block are counted from the tensors the mixer keeps for its backward
(``model/mixer.py``; in_proj's x and z, the conv output and delta are rebuilt in the backward,
and the fused add+RMSNorm keeps only its input): the block's fp32 input stream, in_proj's
input (the normed stream), the x_proj output (dt, B, C) and the scan output (out_proj's
input), plus the scan's saved states (one every ``SCAN_SAVE_EVERY`` positions). With gradient
checkpointing a block keeps only its input and one block is rebuilt at a time. The estimate
leaves out the allocator's fragmentation and the kernels' scratch: it is meant as a floor (a
config refused by it cannot fit; one it accepts may still need a smaller batch); the CPU path
keeps about 1.1x these activations (the test compares it with the tensors autograd saves).
``check_device_fits`` compares it with what ``torch.cuda.mem_get_info`` says is free and names
what does fit (a micro-batch of fewer tokens, gradient checkpointing, a smaller d_model or
n_layer) before anything is allocated on the GPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from mambadna.errors import ConfigError
from mambadna.model.config import ModelConfig
from mambadna.model.network import parameter_count

SCAN_SAVE_EVERY = 64
"""Positions between the scan states the Triton backward keeps (kernels/README.md)."""
ADAMW_BYTES = 8
"""AdamW keeps two fp32 moments per parameter."""
GIB = 1 << 30


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs on one device (a floor; see the module docstring)."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    tokens: int
    """Tokens (batch x length) of one forward pass the activations are counted for."""

    @property
    def fixed(self) -> int:
        """What does not depend on the batch: weights, gradients, optimizer state."""
        return self.parameters + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.fixed + self.activations

    @property
    def per_token(self) -> float:
        return self.activations / self.tokens if self.tokens else 0.0

    def describe(self) -> str:
        parts = [f"weights {self.parameters / GIB:,.2f} GiB"]
        if self.gradients:
            parts.append(f"gradients {self.gradients / GIB:,.2f} GiB")
        if self.optimizer:
            parts.append(f"AdamW state {self.optimizer / GIB:,.2f} GiB")
        parts.append(f"activations of {self.tokens:,} tokens {self.activations / GIB:,.2f} GiB")
        return " + ".join(parts)


def _block_bytes(cfg: ModelConfig, act: int) -> int:
    """Activation bytes per token of one block (the tensors listed in the docstring), ``act``
    bytes per element of the autocast dtype; the stream is fp32 whatever the dtype."""
    d, i = cfg.d_model, cfg.d_inner
    return 4 * d + act * (d + cfg.dt_rank + 2 * cfg.d_state + i)


def estimate_memory(cfg: ModelConfig, *, tokens: int, training: bool,
                    bf16: bool = False, checkpointing: bool = False,
                    shards: int = 1) -> MemoryEstimate:
    """Bytes ``cfg`` needs on one device for a forward (inference) or a training step over
    ``tokens`` tokens. bf16: autocast activations (the weights stay fp32, as in
    bf16-mixed). checkpointing: blocks recomputed in the backward pass. shards: devices the
    weights, gradients and optimizer state are split over (FSDP; 1 for DDP)."""
    act = 2 if bf16 else 4
    params = parameter_count(cfg) * 4
    block = _block_bytes(cfg, act) * tokens
    states = cfg.d_inner * cfg.d_state * 4 * math.ceil(tokens / SCAN_SAVE_EVERY)
    logits = cfg.vocab_size * 4 * tokens
    if not training:
        return MemoryEstimate(params, 0, 0, block + logits + cfg.d_model * 4 * tokens, tokens)
    if checkpointing:  # each block keeps its input; one block at a time is rebuilt
        activations = cfg.n_layer * cfg.d_model * 4 * tokens + block + states
    else:
        activations = cfg.n_layer * (block + states)
    activations += 2 * logits + cfg.d_model * 4 * tokens  # logits and their gradient
    per_shard = math.ceil(params / shards)
    return MemoryEstimate(per_shard, per_shard, per_shard // 4 * ADAMW_BYTES, activations,
                          tokens)


def _largest(fits, high: int) -> int:
    """The largest n in [0, high] with fits(n) (fits is monotone), by bisection."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def what_fits(cfg: ModelConfig, free: int, *, tokens: int, training: bool, bf16: bool = False,
              checkpointing: bool = False, shards: int = 1) -> str:
    """What would fit in ``free`` bytes: fewer tokens per micro-batch, checkpointing, or (when
    the weights and optimizer state alone do not fit) a smaller d_model or n_layer."""
    def estimate(c=cfg, t=tokens, ckpt=checkpointing) -> MemoryEstimate:
        return estimate_memory(c, tokens=t, training=training, bf16=bf16, checkpointing=ckpt,
                               shards=shards)

    advice = []
    if estimate(t=1).total <= free:
        most = _largest(lambda t: estimate(t=max(t, 1)).total <= free, tokens)
        advice.append(f"up to {most:,} tokens per micro-batch (batch x length; here {tokens:,})"
                      + (" with --accumulate to keep the tokens per step" if training else ""))
        if training and not checkpointing and estimate(ckpt=True).total <= free:
            advice.append("or --gradient-checkpointing on at this batch")
        return "; ".join(advice)
    dt_follows = cfg.dt_rank == math.ceil(cfg.d_model / 16)

    def with_d(d: int) -> ModelConfig:
        return dataclasses.replace(cfg, d_model=d, dt_rank=math.ceil(d / 16) if dt_follows
                                   else cfg.dt_rank)

    d_model = _largest(lambda d: d > 0 and estimate(c=with_d(d), t=1).total <= free,
                       cfg.d_model)
    n_layer = _largest(lambda n: n > 0 and estimate(
        c=dataclasses.replace(cfg, n_layer=n), t=1).total <= free, cfg.n_layer)
    if d_model:
        advice.append(f"at n_layer {cfg.n_layer}, d_model up to {d_model} (at 1 token)")
    if n_layer:
        advice.append(f"at d_model {cfg.d_model}, n_layer up to {n_layer} (at 1 token)")
    if training and shards == 1:
        advice.append("or --strategy fsdp over several GPUs (shards weights and optimizer)")
    return "; ".join(advice) or "a smaller model (the weights alone do not fit)"


def check_device_fits(cfg: ModelConfig, device: str | torch.device, *, tokens: int,
                      training: bool, bf16: bool = False, checkpointing: bool = False,
                      shards: int = 1, resident: bool = False, free: int | None = None) -> None:
    """Refuse (ConfigError) a config that cannot fit ``device``: no-op off CUDA unless
    ``free`` (bytes) is given. resident: the weights are on the device already (they are
    counted in what is used, not again in what is needed)."""
    device = torch.device(device)
    if free is None:
        if device.type != "cuda" or not torch.cuda.is_available():
            return
        free, _total = torch.cuda.mem_get_info(device)
    est = estimate_memory(cfg, tokens=tokens, training=training, bf16=bf16,
                          checkpointing=checkpointing, shards=shards)
    needed = est.total - (est.parameters if resident else 0)
    if needed <= free:
        return
    budget = free + (est.parameters if resident else 0)
    task = "a training step" if training else "inference"
    raise ConfigError(
        f"d_model {cfg.d_model} x n_layer {cfg.n_layer} needs at least "
        f"{est.total / GIB:,.2f} GiB on {device} for {task} ({est.describe()}); "
        f"{budget / GIB:,.2f} GiB {'is' if not resident else 'was'} free",
        fix="what fits: " + what_fits(cfg, budget, tokens=tokens, training=training,
                                      bf16=bf16, checkpointing=checkpointing, shards=shards))
