"""Thin LightningModules: next-base pretraining and sequence classification.

Both wrap a MambaDNA network (``self.model``), take batches from mambadna.data
(``tokens`` uint8 (batch, L)[, ``labels`` int64 (batch,)]) and share the optimizer setup:
AdamW (decay on matrices only) with a per-step cosine schedule after a linear warmup.
Validation metrics are accumulated as sums and all-reduced once per validation, so they are
exact over the whole validation set on any number of devices.

Context parallelism (``context_parallel`` > 1): consecutive ranks form groups that share each
batch (the data module gives them the same one) and each run the model on their segment of
its windows. Gradients are made to average right under DDP's mean over all ranks: the
language model's loss share of a segment is scaled by the group size (the shares' gradients
add up to the whole window's), the classifier's loss is the whole window's on every rank
(``context_sum`` already counts it once per rank).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from mambadna.alphabet import PAD, N
from mambadna.model import (
    ContextGroup,
    MambaDNA,
    context_groups,
    context_sum,
    lm_loss,
    segment_lm_loss,
)
from mambadna.train.metrics import accuracy, confusion_update, macro_f1, write_confusion_csv
from mambadna.train.optim import adamw, cosine_with_warmup, decay_groups

LN2 = math.log(2)


@dataclass(frozen=True)
class OptimSettings:
    """Optimizer and schedule settings (see TrainConfig for their meaning)."""

    lr: float
    weight_decay: float
    betas: tuple[float, float]
    max_steps: int
    lr_warmup: float
    min_lr_ratio: float
    fused: bool | None = None
    """Fused AdamW: None = on GPUs (mambadna.train.optim.adamw)."""
    head_lr_scale: float = 1.0
    """Learning rate of the classification head, as a multiple of ``lr``."""

    @classmethod
    def from_config(cls, config) -> OptimSettings:
        return cls(config.lr, config.weight_decay, tuple(config.adam_betas), config.max_steps,
                   config.lr_warmup, config.min_lr_ratio,
                   head_lr_scale=getattr(config, "head_lr_scale", 1.0))


class _Base(pl.LightningModule):
    def __init__(self, model: MambaDNA, optim: OptimSettings, context_parallel: int = 1) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.context_parallel = int(context_parallel)
        self.context = ContextGroup.single()

    def setup(self, stage: str) -> None:
        """Split the process group into context-parallel groups (after Lightning started it,
        on every rank alike)."""
        if self.context_parallel > 1 and self.context.size == 1:
            self.context = context_groups(self.context_parallel)

    def _segment(self, tokens: torch.Tensor) -> torch.Tensor:
        """This rank's segment of the windows (all of them without context parallelism)."""
        start, stop = self.context.bounds(tokens.shape[1])
        return tokens[:, start:stop]

    def configure_optimizers(self):
        o = self.optim
        fused = o.fused
        if self._grad_scaler() is not None:
            fused = False  # the scaler must unscale before clipping: a fused step does it late
        groups = decay_groups(self.model, o.weight_decay, scaled="classifier.", lr=o.lr,
                              scale=o.head_lr_scale)
        optimizer = adamw(groups, o.lr, o.betas, fused=fused)
        factor = cosine_with_warmup(o.max_steps, o.lr_warmup, o.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def _grad_scaler(self):
        """The fp16 gradient scaler of the run's precision plugin, or None (fp32, bf16)."""
        trainer = self._trainer
        return getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        """Clip by norm ourselves when no gradient scaler is involved.

        Lightning's mixed-precision plugin refuses to clip for any optimizer that unscales in its
        step (the fused AdamW), even under bf16 where nothing is scaled: with the defaults a GPU
        run stopped at its first step. Without a scaler the gradients are true values and
        clipping them is exact; FSDP computes the norm over all shards itself.
        """
        if not gradient_clip_val:
            return
        if self._grad_scaler() is not None or gradient_clip_algorithm == "value":
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        wrapped = self.trainer.strategy.model
        if hasattr(wrapped, "clip_grad_norm_"):  # FSDP: the norm over every shard
            wrapped.clip_grad_norm_(gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def _log_step(self, loss: torch.Tensor, tokens: torch.Tensor) -> None:
        batch = tokens.shape[0]
        self.log("train_loss", loss, batch_size=batch, prog_bar=True)
        self.log("seq_len", float(tokens.shape[1]), batch_size=batch)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            self.log("lr", scheduler.get_last_lr()[0], batch_size=batch)


class LanguageModelModule(_Base):
    """Next-base prediction. Logs train/val loss (nats per base), perplexity, bits per base.

    The loss ignores PAD and N targets (mambadna.model.lm_loss).
    """

    def _loss(self, tokens: torch.Tensor):
        """(loss to differentiate, loss of the whole windows, loss sum and counted targets of
        this rank's part)."""
        if self.context.size == 1:
            loss = lm_loss(self.model(tokens), tokens)
            targets = tokens[:, 1:]
            counted = ((targets != PAD) & (targets != N)).sum()
            return loss, loss.detach(), loss.detach() * counted, counted
        logits = self.model(self._segment(tokens), context=self.context)
        share, loss_sum, counted = segment_lm_loss(logits, tokens, self.context)
        whole = context_sum(share.detach(), self.context)
        return share * self.context.size, whole, loss_sum.detach(), counted

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        tokens = batch["tokens"].long()  # (batch, L)
        loss, whole, _, _ = self._loss(tokens)
        self._log_step(whole, tokens)
        self.log("train_bpb", whole / LN2, batch_size=tokens.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, _, loss_sum, counted = self._loss(batch["tokens"].long())
        self._val_sums += torch.stack([loss_sum.double(), counted.double()])

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        loss = float(sums[0] / sums[1].clamp(min=1))
        self.log_dict({"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)),
                       "val_bpb": loss / LN2}, prog_bar=True, sync_dist=True)


class ClassifierModule(_Base):
    """Cross-entropy over class labels; validation logs loss, accuracy, macro-F1 and writes the
    confusion matrix to ``run_dir/confusion_matrix.csv`` (rows true, columns predicted).

    class_weights: loss weight per class (None: all 1); validation loss is unweighted.
    """

    def __init__(self, model: MambaDNA, optim: OptimSettings, labels: Sequence[str],
                 class_weights: Sequence[float] | None = None,
                 run_dir: str | Path | None = None, context_parallel: int = 1) -> None:
        super().__init__(model, optim, context_parallel)
        self.labels = list(labels)
        weights = torch.tensor(class_weights if class_weights is not None
                               else [1.0] * len(self.labels), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        # Training windows are never padded: every row is real up to L.
        if self.context.size > 1:
            return self.model.classify_logits(self._segment(tokens), context=self.context)
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)
        return self.model.classify_logits(tokens, lengths)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        tokens, labels = batch["tokens"].long(), batch["labels"]
        logits = self._logits(tokens)
        loss = F.cross_entropy(logits, labels, weight=self.class_weights)
        self._log_step(loss, tokens)
        acc = (logits.argmax(-1) == labels).float().mean()
        self.log("train_acc", acc, batch_size=tokens.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        k = len(self.labels)
        self._confusion = torch.zeros(k, k, dtype=torch.float64, device=self.device)
        self._val_loss = torch.zeros((), dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        tokens, labels = batch["tokens"].long(), batch["labels"]
        logits = self._logits(tokens)
        if not self.context.first:
            return  # the ranks of a context group hold the same logits: count them once
        self._val_loss += F.cross_entropy(logits, labels, reduction="sum").double()
        confusion_update(self._confusion, labels, logits.argmax(-1))

    def on_validation_epoch_end(self) -> None:
        strategy = self.trainer.strategy
        confusion = strategy.reduce(self._confusion, reduce_op="sum")
        total_loss = strategy.reduce(self._val_loss, reduce_op="sum")
        n = float(confusion.sum())
        self.log_dict({"val_loss": float(total_loss) / max(n, 1.0),
                       "val_acc": accuracy(confusion), "val_macro_f1": macro_f1(confusion)},
                      prog_bar=True, sync_dist=True)  # equal on every rank: already reduced
        if (self.run_dir is not None and self.trainer.is_global_zero
                and not self.trainer.sanity_checking):
            write_confusion_csv(confusion.cpu(), self.labels,
                                self.run_dir / "confusion_matrix.csv")
