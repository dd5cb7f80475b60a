"""MambaDNA: embedding -> n_layer x [RMSNorm -> Mamba mixer, residual] -> RMSNorm -> heads.

The residual stream is kept in fp32 even under autocast (each block adds its mixer's output to
it), and the RMSNorms compute in fp32, as in the reference implementation. Each block's residual
add is done by the next norm (one fused kernel on CUDA), so a block takes and returns the pair
(mixer output, residual stream before that output is added), as the Mamba authors' blocks do.
Heads: a language model head tied to the embedding (next-base logits) and, when
``num_labels > 0``, a sequence classifier over the pooled final hidden states.

Batches of different lengths are right-padded with PAD. The network is causal, so padding never
changes a real position's output; the classifier and ``embed`` read only real positions.
Bidirectional and RC-equivariant models (``rc_equivariant``: both strands through the same
weights, mambadna.model.strands) use each row's real length instead, so padding changes
nothing there either.

Context parallelism: ``hidden_states(segment, context=group)`` on every rank of a
``ContextGroup`` computes the hidden states of one sequence split along its length, each rank
its own segment, exactly as one process would (``mambadna.kernels.context_parallel``);
``segment_lm_loss`` is each rank's share of the next-base loss of the whole sequence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelHubMixin
from torch import nn
from torch.utils.checkpoint import checkpoint

from mambadna.alphabet import CLS, PAD, N, encode
from mambadna.errors import ConfigError, InputError
from mambadna.kernels.context_parallel import ContextGroup, context_sum
from mambadna.kernels.selective_scan import get_config, scan_config
from mambadna.model.config import POOLINGS, ModelConfig
from mambadna.model.mixer import Mixer, RMSNorm, no_weight_decay
from mambadna.model.state import ModelState
from mambadna.model.strands import (
    base_logits,
    complement_index,
    join_strands,
    next_base_logits,
    pool,
    reverse_complement_tokens,
)


class Block(nn.Module):
    """stream = residual + hidden; (Mixer(RMSNorm(stream)), stream). The stream (batch, L,
    d_model) stays fp32; the block's output is stream + mixer output, which the next norm
    (or the final one) adds, fused with itself."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.mixer = Mixer(cfg)

    def forward(self, hidden, residual=None, conv_state=None, ssm_state=None, lengths=None,
                recompute=True, context=None):
        """hidden: the previous block's mixer output (or the embedding, with residual None);
        residual: the fp32 stream it is added to; recompute, context: see Mixer.forward.
        Returns (out, stream, conv_state, ssm_state)."""
        normed, residual = self.norm.add_norm(hidden, residual)
        out, conv_state, ssm_state = self.mixer(normed, conv_state, ssm_state, lengths,
                                                context, recompute)
        return out, residual, conv_state, ssm_state

    def step(self, residual, conv_state, ssm_state):
        out, conv_state, ssm_state = self.mixer.step(self.norm(residual), conv_state, ssm_state)
        return residual + out.float(), conv_state, ssm_state


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-base cross-entropy: logits (batch, L, vocab) at t predict tokens (batch, L) at t+1.

    Targets that are PAD or N are not counted; the mean is over counted positions (0 with a
    gradient path when there are none).
    """
    logits = logits[:, :-1].float()
    targets = tokens[:, 1:].long()
    counted = (targets != PAD) & (targets != N)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             reduction="none")
    return (losses * counted.reshape(-1)).sum() / counted.sum().clamp(min=1)


def segment_lm_loss(logits: torch.Tensor, tokens: torch.Tensor,
                    context: ContextGroup) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's share of ``lm_loss`` of a sequence split over ``context``.

    tokens (batch, L): the whole sequences (every rank holds them); logits (batch, L_rank,
    vocab): this rank's segment [start, stop) of them (``context.bounds(L)``). The targets of a
    segment's last position are the next rank's first tokens. Returns (share, loss sum, counted
    targets) of this segment, share = sum / counted targets of the whole sequences, so that the
    shares of the ranks add up to ``lm_loss(all logits, tokens)``, and so do their gradients.
    """
    start, stop = context.bounds(tokens.shape[1])
    if logits.shape[:2] != (tokens.shape[0], stop - start):
        raise InputError(f"logits of shape {tuple(logits.shape)} are not rank "
                         f"{context.rank}'s segment [{start}, {stop}) of tokens of shape "
                         f"{tuple(tokens.shape)}")
    targets = tokens[:, start + 1:stop + 1].long()  # the last rank has one target fewer
    logits = logits[:, :targets.shape[1]].float()
    counted = (targets != PAD) & (targets != N)
    every = tokens[:, 1:]
    total = ((every != PAD) & (every != N)).sum()
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             reduction="none")
    loss_sum = (losses * counted.reshape(-1)).sum()
    return loss_sum / total.clamp(min=1), loss_sum, counted.sum()


def _same_scan_config(config):
    """A checkpoint's contexts: its recomputation runs under the scan configuration of its
    forward (a ``with scan_config(...)`` block is over by the backward), so that it saves the
    same tensors (the chunk states' count follows the configuration's chunk)."""
    return contextlib.nullcontext(), scan_config(config)


def _as_tokens(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Check tokens (batch, L) of integer ids in [0, vocab_size) and return them as int64."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() != 2 or tokens.shape[1] == 0:
        raise InputError(f"tokens must be (batch, L) with L >= 1, got shape {tuple(tokens.shape)}",
                         fix="add a batch axis with tokens[None] for a single sequence")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise InputError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    tokens = tokens.long()
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        raise InputError(f"token ids must be in [0, {vocab_size}), got range [{low}, {high}]",
                         fix="encode sequences with mambadna.tokenize")
    return tokens


def _real_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Count of non-PAD tokens per row (batch,); every row needs at least one."""
    lengths = (tokens != PAD).sum(1)
    if bool((lengths == 0).any()):
        row = int(torch.nonzero(lengths == 0)[0, 0])
        raise InputError(f"batch row {row} holds only PAD tokens; every sequence needs at "
                         f"least one base")
    return lengths


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of ``MambaDNA(cfg)`` from its shapes alone, without building it (the tied LM
    head counts once; tests check it against ``num_parameters``)."""
    d, i, r, s, k = cfg.d_model, cfg.d_inner, int(cfg.dt_rank), cfg.d_state, cfg.d_conv
    block = (d  # norm
             + 2 * i * d  # in_proj (x and z)
             + i * k + i  # depthwise conv and its bias
             + i * s + i  # A_log, D
             + (r + 2 * s) * i  # x_proj -> dt, B, C
             + i * r + i  # dt_proj and its bias
             + d * i)  # out_proj
    head = cfg.num_labels * d + cfg.num_labels if cfg.num_labels else 0
    return cfg.vocab_size * d + cfg.n_layer * block + d + head


def _available_memory() -> int | None:
    """Bytes of memory the system can still give (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(cfg: ModelConfig, available: int | None = None) -> None:
    """Refuse (ConfigError) a config whose fp32 weights alone exceed the memory available, and
    say which d_model and n_layer would fit, before anything is allocated: otherwise an
    allocation fails halfway through building the model, with a traceback."""
    available = _available_memory() if available is None else available
    needed = parameter_count(cfg) * 4
    if available is None or needed <= available:
        return
    budget = available // 4

    def count(**change) -> int:
        return parameter_count(dataclasses.replace(cfg, **change))

    per_layer = count(n_layer=2) - count(n_layer=1)
    max_layers = max(0, (budget - count(n_layer=1) + per_layer) // per_layer)
    low, high = 1, cfg.d_model  # the largest d_model at this n_layer (dt_rank follows it)
    while low < high:
        mid = (low + high + 1) // 2
        dt_rank = math.ceil(mid / 16) if cfg.dt_rank == math.ceil(cfg.d_model / 16) \
            else cfg.dt_rank
        if count(d_model=mid, dt_rank=dt_rank) <= budget:
            low = mid
        else:
            high = mid - 1
    gib = 1 << 30
    raise ConfigError(
        f"d_model {cfg.d_model} x n_layer {cfg.n_layer} is {parameter_count(cfg):,} "
        f"parameters: {needed / gib:,.1f} GiB for the fp32 weights alone, more than the "
        f"{available / gib:,.1f} GiB of memory available",
        fix=f"at n_layer {cfg.n_layer}, d_model up to {low} fits"
            + (f"; at d_model {cfg.d_model}, n_layer up to {max_layers}" if max_layers else "")
            + " (training needs about 4x the weights: gradients and AdamW state)")


class MambaDNA(nn.Module, ModelHubMixin, library_name="mambadna",
               tags=["dna", "genomics", "mamba", "state-space-model"]):
    """A Mamba language model over DNA tokens with an optional sequence-classification head.

    Hugging Face Hub (huggingface_hub's ModelHubMixin): ``MambaDNA.from_pretrained("user/name",
    revision=...)`` or a local folder, ``model.push_to_hub("user/name")``; both keep our folder
    format (mambadna.model.save / io): safetensors weights with their sha256, JSON, a card.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        if torch.get_default_device().type != "meta":
            check_fits(cfg)  # before any allocation
        super().__init__()
        self.config = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.classifier = nn.Linear(cfg.d_model, cfg.num_labels) if cfg.num_labels else None
        # Not a weight (not saved): the token permutation of the reverse strand.
        self.register_buffer("complement", complement_index(cfg.vocab_size), persistent=False)
        self.labels: list[str] | None = None
        self.training_info: dict | None = None
        self.weights_sha256: str | None = None  # of model.safetensors, once saved or loaded
        self._init_weights()

    def _init_weights(self) -> None:
        """Embedding N(0, initializer_range); out_proj rescaled by 1/sqrt(n_layer); classifier
        bias zero (the mixer initialises dt, A_log and D itself)."""
        cfg = self.config
        nn.init.normal_(self.embedding.weight, std=cfg.initializer_range)
        if cfg.rescale_prenorm_residual:
            for layer in self.layers:
                weight = layer.mixer.out_proj.weight
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                with torch.no_grad():
                    weight /= math.sqrt(cfg.n_layer)
        if self.classifier is not None:
            nn.init.zeros_(self.classifier.bias)
            no_weight_decay(self.classifier.bias)

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def num_parameters(self) -> int:
        """Number of parameters (the tied LM head counts once)."""
        return sum(p.numel() for p in self.parameters())

    def allocate_state(self, batch_size: int) -> ModelState:
        """Zero state (a sequence start) on the model's device."""
        self._require_streaming("allocate_state")
        cfg = self.config
        return ModelState.zeros(cfg.n_layer, batch_size, cfg.d_inner, cfg.d_conv, cfg.d_state,
                                device=self.device)

    # ------------------------------------------------------------------ backbone

    def _require_streaming(self, what: str) -> None:
        if self.config.bidirectional or self.config.rc_equivariant:
            kind = "bidirectional" if self.config.bidirectional else "RC-equivariant"
            raise ConfigError(f"{what}: a {kind} model cannot stream (its reverse "
                              f"direction needs the whole sequence)",
                              fix="run whole sequences without state, or use a "
                                  "unidirectional model (bidirectional=False, "
                                  "rc_equivariant=False)")

    def _check_state(self, state: ModelState, batch: int) -> None:
        if not isinstance(state, ModelState):
            raise TypeError(f"state must be a ModelState, got {type(state).__name__}")
        if state.n_layer != self.config.n_layer or state.batch_size != batch:
            raise InputError(f"state holds {state.n_layer} layers x batch {state.batch_size}, "
                             f"the model needs {self.config.n_layer} layers x batch {batch}")

    @property
    def hidden_size(self) -> int:
        """Width of ``hidden_states``: d_model, or 2 * d_model (both strands) when
        rc_equivariant. Pooled vectors are always d_model wide."""
        return self.config.d_model * (2 if self.config.rc_equivariant else 1)

    def resolve_layers(self, layers: int | Sequence[int] | None) -> list[int]:
        """Block indices (0 .. n_layer-1; negative ones count from the end) -> sorted
        non-negative indices; None: the last block. Unknown or repeated blocks: ConfigError."""
        n = self.config.n_layer
        if layers is None:
            return [n - 1]
        items = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
        found = []
        for layer in items:
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) \
                    or not -n <= layer < n:
                raise ConfigError(f"layer {layer!r} is not a block of this model: it has {n} "
                                  f"blocks, 0 to {n - 1} (or -{n} to -1 from the end)")
            found.append(int(layer) % n)
        if not found or len(set(found)) != len(found):
            raise ConfigError(f"layers {items} name no block or the same block twice",
                              fix=f"give distinct blocks in 0..{n - 1} or -{n}..-1")
        return sorted(found)

    def hidden_states(self, tokens, state=None, return_state=False, lengths=None,
                      layers=None, append_cls=False, context: ContextGroup | None = None):
        """Final-normed hidden states (batch, L, hidden_size) fp32 of tokens (batch, L).

        state: a ModelState to continue from (None: sequence start); with ``return_state`` the
        state after the last position is returned too. lengths (batch,): real lengths of
        right-padded rows (default: count of non-PAD tokens), used by bidirectional and
        RC-equivariant models. layers: block indices (see ``resolve_layers``) whose outputs,
        each through the final RMSNorm, are averaged (None: the last block, the usual
        output). append_cls: put a CLS token after each row's last real base (on each strand
        of an RC-equivariant model): the output is then L + 1 long, CLS at position lengths.
        An RC-equivariant model returns both strands (mambadna.model.strands).
        context: a ``ContextGroup`` whose ranks each pass their segment of the same sequences
        (every rank must call this together); the result is this rank's segment of the
        one-process result, and a returned state is the state after this rank's segment.
        """
        cfg = self.config
        tokens = _as_tokens(tokens, cfg.vocab_size)
        if context is not None and context.size > 1:
            self._check_context(context, tokens, state)
            if cfg.rc_equivariant or append_cls:
                raise ConfigError("context parallelism splits one strand of a sequence along "
                                  "its length: it cannot run an RC-equivariant model or "
                                  "append a CLS token",
                                  fix="use --context-parallel 1 for these")
        else:
            context = None
        whole = cfg.bidirectional or cfg.rc_equivariant or append_cls
        if whole and (state is not None or return_state):
            if append_cls:
                raise ConfigError("append_cls cannot be combined with a carried state")
            self._require_streaming("hidden_states with state")
        if whole:
            lengths = _real_lengths(tokens) if lengths is None else \
                torch.as_tensor(lengths, device=tokens.device).long()
        if cfg.rc_equivariant:
            tokens = torch.cat([tokens, reverse_complement_tokens(tokens, lengths,
                                                                  self.complement)])
        if append_cls:
            both = lengths.repeat(2) if cfg.rc_equivariant else lengths
            tokens = F.pad(tokens, (0, 1), value=PAD)
            tokens[torch.arange(tokens.shape[0], device=tokens.device), both] = CLS
            lengths = lengths + 1
        if state is not None:
            self._check_state(state, tokens.shape[0])
        scan_lengths = None
        if cfg.bidirectional and not bool((lengths == tokens.shape[1]).all()):
            scan_lengths = lengths.repeat(2) if cfg.rc_equivariant else lengths
        hidden, new_state = self._backbone(tokens, state, scan_lengths,
                                           self.resolve_layers(layers), context,
                                           whole_state=return_state)
        if cfg.rc_equivariant:
            hidden = join_strands(hidden, lengths)
        return (hidden, new_state) if return_state else hidden

    def _backbone(self, tokens, state=None, lengths=None, layers=None, context=None,
                  whole_state=True):
        """hidden_states of checked tokens: (the mean of the final-normed outputs of the blocks
        ``layers`` (default: the last), ModelState). No host synchronisation, so a CUDA graph
        can capture it (mambadna.model.graphs). Without ``whole_state`` the blocks after the
        last of ``layers`` are skipped (the state then covers only the blocks run)."""
        layers = [self.config.n_layer - 1] if layers is None else layers
        hidden = self.embedding(tokens).float()  # (batch, L, d_model)
        residual = None
        conv, ssm, picked = [], [], []
        checkpointing = (self.config.gradient_checkpointing and self.training
                         and torch.is_grad_enabled())
        last = self.config.n_layer - 1 if whole_state else layers[-1]
        for i, layer in enumerate(self.layers[:last + 1]):
            if checkpointing and residual is not None:
                # A checkpoint keeps its inputs: one fp32 stream, not the stream and the
                # mixer output (the add runs unfused here, to halve what is kept).
                hidden, residual = residual + hidden.float(), None
            args = (hidden, residual, state.conv[i] if state else None,
                    state.ssm[i] if state else None, lengths, not checkpointing, context)
            if checkpointing:
                hidden, residual, conv_i, ssm_i = checkpoint(
                    layer, *args, use_reentrant=False,
                    context_fn=functools.partial(_same_scan_config, get_config()))
            else:
                hidden, residual, conv_i, ssm_i = layer(*args)
            conv.append(conv_i)
            ssm.append(ssm_i)
            if i in layers:
                picked.append(self.norm_f(hidden, residual))
        out = picked[0] if len(picked) == 1 else torch.stack(picked).mean(0)
        return out, ModelState(conv, ssm)

    def _check_context(self, context: ContextGroup, tokens: torch.Tensor, state) -> None:
        if not isinstance(context, ContextGroup):
            raise TypeError(f"context must be a ContextGroup, got {type(context).__name__}")
        if self.config.bidirectional:
            raise ConfigError("a bidirectional model cannot split a sequence over ranks (its "
                              "reverse direction needs the whole sequence)",
                              fix="use a unidirectional model, or --context-parallel 1")
        if state is not None and not context.first:
            raise InputError(f"a state to continue from belongs to rank 0 (the sequence's "
                             f"start), not rank {context.rank}")
        if tokens.shape[1] < self.config.d_conv - 1:
            raise InputError(f"rank {context.rank}'s segment holds {tokens.shape[1]} positions; "
                             f"context parallelism needs at least d_conv - 1 = "
                             f"{self.config.d_conv - 1} per rank",
                             fix="use longer sequences or fewer context-parallel ranks")

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied LM head: hidden (..., d_model) -> logits (..., vocab) fp32 (one strand)."""
        return F.linear(hidden, self.embedding.weight).float()

    def forward(self, tokens, state=None, return_state=False, context=None):
        """Next-base logits (batch, L, vocab) fp32 [, ModelState] of tokens (batch, L):
        logits[:, t] predict tokens[:, t + 1]. An RC-equivariant model adds the reverse
        strand's view from t + 2 onwards (never the base predicted; mambadna.model.strands).
        context: as in ``hidden_states`` (tokens: this rank's segment)."""
        if self.config.rc_equivariant:
            if state is not None or return_state:
                self._require_streaming("forward with state")
            tokens = _as_tokens(tokens, self.config.vocab_size)
            lengths = _real_lengths(tokens)
            hidden = self.hidden_states(tokens, lengths=lengths, context=context)
            return next_base_logits(hidden, lengths, self.embedding.weight, self.complement)
        out = self.hidden_states(tokens, state=state, return_state=return_state,
                                 context=context)
        if return_state:
            hidden, state = out
            return self.lm_logits(hidden), state
        return self.lm_logits(out)

    def base_logits(self, tokens, lengths=None) -> torch.Tensor:
        """Logits (batch, L, vocab) fp32 of the base AT each position, from the bases before
        it (and, when rc_equivariant, the reverse strand's bases after it); position 0 of a
        unidirectional model has no context (all zeros). For an RC-equivariant model
        ``base_logits(rc x) = flip(complement(base_logits(x)))`` within real lengths."""
        tokens = _as_tokens(tokens, self.config.vocab_size)
        lengths = _real_lengths(tokens) if lengths is None else \
            torch.as_tensor(lengths, device=tokens.device).long()
        hidden = self.hidden_states(tokens, lengths=lengths)
        if self.config.rc_equivariant:
            return base_logits(hidden, lengths, self.embedding.weight, self.complement)
        return F.pad(self.lm_logits(hidden)[:, :-1], (0, 0, 1, 0))

    def step(self, token: torch.Tensor, state: ModelState | None = None):
        """Advance one position: token (batch,) -> (logits (batch, vocab) fp32, new state)."""
        self._require_streaming("step")
        token = _as_tokens(token.reshape(-1, 1), self.config.vocab_size)[:, 0]
        state = self.allocate_state(token.shape[0]) if state is None else state
        self._check_state(state, token.shape[0])
        residual = self.embedding(token).float()  # (batch, d_model)
        conv, ssm = [], []
        for i, layer in enumerate(self.layers):
            residual, conv_i, ssm_i = layer.step(residual, state.conv[i], state.ssm[i])
            conv.append(conv_i)
            ssm.append(ssm_i)
        return self.lm_logits(self.norm_f(residual)), ModelState(conv, ssm)

    # ------------------------------------------------------------------ pooling and heads

    def pool(self, hidden, lengths=None, mode=None, mask=None):
        """Pool hidden (batch, L, hidden_size) over real positions -> (batch, d_model).

        lengths (batch,): real lengths of right-padded rows (None: all L). mode: "last" (the
        last real position; of each strand for an RC-equivariant model), "mean" or "max" over
        the positions of ``mask`` (batch, L) bool (default: the real ones); None =
        config.pooling. See mambadna.model.strands.pool.
        """
        mode = self.config.pooling if mode is None else mode
        return pool(hidden, lengths, mode, mask, strands=2 if self.config.rc_equivariant else 1)

    def classify_logits(self, tokens, lengths=None, context: ContextGroup | None = None):
        """Class logits (batch, num_labels) fp32 of right-padded tokens (batch, L).

        lengths (batch,): real lengths (default: count of non-PAD tokens per row).
        context: a ``ContextGroup`` whose ranks each pass their segment of the same unpadded
        sequences; every rank gets the logits of the whole sequences (pooled over all
        segments: ``context_sum``, so the gradients reach every rank's segment).
        """
        if self.classifier is None:
            raise ConfigError("this model has no classification head (num_labels = 0)",
                              fix="finetune it with labels, or build it with num_labels >= 2")
        tokens = _as_tokens(tokens, self.config.vocab_size)
        if context is not None and context.size > 1:
            if lengths is not None or bool((tokens == PAD).any()):
                raise InputError("a sequence split over ranks must not be padded",
                                 fix="split sequences of equal length, or one sequence")
            hidden = self.hidden_states(tokens, context=context)
            if self.config.pooling == "mean":
                count = context_sum(hidden.new_tensor(float(hidden.shape[1])), context)
                pooled = context_sum(hidden.sum(1), context) / count
            else:  # the last position of the sequence is the last rank's
                pooled = context_sum(hidden[:, -1] * float(context.last), context)
            return self.classifier(pooled).float()
        if lengths is None:
            lengths = _real_lengths(tokens)
        hidden = self.hidden_states(tokens, lengths=lengths)
        return self.classifier(self.pool(hidden, lengths)).float()

    # ------------------------------------------------------------------ inference helpers

    def embed(self, sequences: Sequence[str | bytes | np.ndarray], batch_size: int = 8,
              pool: str | None = None, segment_length: int = 65_536) -> np.ndarray:
        """Pooled embeddings (n, d_model) float32 of DNA strings or token arrays.

        Strings/bytes are encoded with ``mambadna.alphabet.encode`` (IUPAC codes -> N); arrays
        are taken as token ids. pool: "mean" over every real position (N included: the hidden
        state there still summarises the context) or "last" real position; None =
        config.pooling. Sequences are batched by length; unidirectional models stream long
        sequences in pieces of ``segment_length`` bases, so memory does not grow with length.
        """
        mode = self.config.pooling if pool is None else pool
        if mode not in POOLINGS:
            raise ConfigError(f"pool must be one of {POOLINGS}, got {mode!r}")
        if batch_size < 1 or segment_length < 1:
            raise ConfigError("batch_size and segment_length must be >= 1")
        arrays = [_to_token_array(seq, i) for i, seq in enumerate(sequences)]
        out = np.zeros((len(arrays), self.config.d_model), dtype=np.float32)
        order = sorted(range(len(arrays)), key=lambda i: len(arrays[i]))
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for lo in range(0, len(order), batch_size):
                    rows = order[lo:lo + batch_size]
                    pooled = self._embed_batch([arrays[i] for i in rows], mode, segment_length)
                    out[rows] = pooled.float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def _embed_batch(self, arrays, mode, segment_length):
        """Pooled hidden states (batch, d_model) of token arrays, right-padded into a batch."""
        lengths = torch.tensor([len(a) for a in arrays], device=self.device)
        tokens = torch.full((len(arrays), int(lengths.max())), PAD, dtype=torch.long)
        for row, array in enumerate(arrays):
            tokens[row, :len(array)] = torch.from_numpy(array.astype(np.int64))
        tokens = tokens.to(self.device)
        if self.config.bidirectional or self.config.rc_equivariant \
                or tokens.shape[1] <= segment_length:
            return self.pool(self.hidden_states(tokens, lengths=lengths), lengths, mode)
        total = torch.zeros(len(arrays), self.config.d_model, device=self.device)
        state = None
        for start in range(0, tokens.shape[1], segment_length):
            hidden, state = self.hidden_states(tokens[:, start:start + segment_length],
                                               state=state, return_state=True)
            local = (lengths - start).clamp(0, hidden.shape[1])  # real positions in the piece
            if mode == "mean":
                mask = torch.arange(hidden.shape[1], device=self.device) < local[:, None]
                total += (hidden * mask[..., None]).sum(1)
            else:
                ends = (lengths > start) & (lengths <= start + hidden.shape[1])
                rows = torch.nonzero(ends)[:, 0]
                total[rows] = hidden[rows, local[rows] - 1]
        return total / lengths[:, None] if mode == "mean" else total

    # ------------------------------------------------------------------ save

    def save_pretrained(self, path: str | Path, labels: Sequence[str] | None = None,
                        training_info: dict | None = None, *, repo_id: str | None = None,
                        push_to_hub: bool = False, **hub_kwargs) -> Path:
        """Write config.json, model.safetensors, labels.json (classifiers) and a README.md
        model card to the folder ``path`` (see mambadna.model.io). Returns the folder.

        push_to_hub: also upload the folder to ``repo_id`` (default: the folder's name).
        hub_kwargs: ModelHubMixin's ``config`` and ``model_card_kwargs`` are not used (the
        config and the card come from the model); the rest go to ``push_to_hub``."""
        from mambadna.model.save import save_pretrained

        if {"config", "model_card_kwargs"} & hub_kwargs.keys():  # called by push_to_hub
            training_info = training_info or self.training_info
        hub_kwargs.pop("config", None)
        hub_kwargs.pop("model_card_kwargs", None)
        folder = save_pretrained(self, path, labels=labels, training_info=training_info)
        if push_to_hub:
            self.push_to_hub(repo_id or folder.name, **hub_kwargs)
        return folder

    def _save_pretrained(self, save_directory: Path) -> None:
        self.save_pretrained(save_directory, training_info=self.training_info)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download,
                         local_files_only: bool, token, device: str = "cpu",
                         strict: bool = False, **unused) -> MambaDNA:
        """ModelHubMixin.from_pretrained's loading, as mambadna.model.io.load_model does it
        (only our files are fetched; the sha256 is checked)."""
        from mambadna.model.folder import load_into
        from mambadna.model.hub import model_folder

        folder = model_folder(model_id, None if Path(model_id).exists() else revision,
                              cache_dir=cache_dir, token=token, force_download=force_download,
                              local_files_only=local_files_only)
        return load_into(cls, folder, device, strict=strict)


def _to_token_array(seq, index: int) -> np.ndarray:
    """A sequence for ``embed`` as a 1-D uint8 token array (non-empty)."""
    if isinstance(seq, (str, bytes, bytearray, memoryview)):
        try:
            tokens = encode(seq)
        except InputError as err:
            raise err.with_location(record=f"sequence {index}") from None
    else:
        tokens = np.asarray(seq)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise InputError(f"sequence {index}: token arrays must be 1-D integer arrays, got "
                             f"shape {tokens.shape} dtype {tokens.dtype}")
    if len(tokens) == 0:
        raise InputError(f"sequence {index} is empty; every sequence needs at least one base")
    return tokens
