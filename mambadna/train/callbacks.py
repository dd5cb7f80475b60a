"""Callbacks: sequence-length warmup, plain log lines, a marker for resumed attempts, and the
checkpoints (last.ckpt every --val-every steps and on Ctrl-C, the best one apart, all atomic).

``SeqLenWarmup`` owns the stage bookkeeping on the training side: the data stream computes the
window length and batch size of each micro-batch from the same SeqLenSchedule and the step, so
the callback checks that the two agree, announces stage changes, and switches gradient
checkpointing on for the stages long enough to need it.
"""

from __future__ import annotations

import copy
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from mambadna.atomic import atomic_file
from mambadna.data.schedule import SeqLenSchedule
from mambadna.train.loggers import info


def save_checkpoint(trainer: pl.Trainer, path: str | Path) -> None:
    """trainer.save_checkpoint (optimizer and loop state included) through the atomic helper:
    a kill while writing leaves the previous file whole, never a truncated one. Every rank
    calls it (the state may be gathered); only rank 0 writes, so only it needs the
    temporary name (each process would draw its own)."""
    if trainer.is_global_zero:
        with atomic_file(path) as tmp:
            trainer.save_checkpoint(tmp, weights_only=False)
    else:
        trainer.save_checkpoint(path, weights_only=False)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint for the best-validation file (best-step=N.ckpt), written
    atomically. last.ckpt is SaveLast's: ModelCheckpoint rewrites its last file only when it
    saved a top-k one at that step, so after a kill --resume went back to the best step.

    On resume the best score comes back even where Lightning would drop it (after which the
    first validation of the resumed run counts as the best, however bad, and model_best/ is
    exported from it): a last.ckpt written before this class existed keeps the state under
    ModelCheckpoint's key; one without the entry (hand-made, or written by another tool) gets
    it from the best-*.ckpt file beside it; a run folder moved since (Lightning compares the
    folder's path) keeps it when the best file moved along."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        save_checkpoint(trainer, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.setdefault("callbacks", {})
        if self.monitor is None or self.state_key in states:
            return
        state = _best_state(states, self.monitor) or self._state_from_disk()
        if state is None:
            rank_zero_warn(f"the checkpoint records no best {self.monitor} and no best-*.ckpt "
                           f"is left in {self.dirpath}: the first validation of this resumed "
                           "run starts the best score afresh")
            return
        states[self.state_key] = state

    def _state_from_disk(self) -> dict | None:
        """The state saved inside the best file(s) of ``dirpath`` (each holds itself as best)."""
        if not self.dirpath or not Path(self.dirpath).is_dir():
            return None
        found = []
        for path in sorted(Path(self.dirpath).glob("best-*.ckpt")):
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError):
                continue  # unreadable or unsafe: not a source of the score
            state = _best_state(saved.get("callbacks") or {}, self.monitor) \
                if isinstance(saved, dict) else None
            if state is not None and Path(state["best_model_path"]).name == path.name:
                found.append(state)
        if not found:
            return None
        sign = -1 if self.mode == "max" else 1
        return min(found, key=lambda s: sign * float(s["best_model_score"]))

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        moved = state.get("dirpath")
        if moved and self.dirpath and os.fspath(moved) != os.fspath(self.dirpath):
            state = _rebased(state, Path(self.dirpath))
        super().load_state_dict(state)


def _best_state(states: dict, monitor: str) -> dict | None:
    """The ModelCheckpoint state (under any key: ours, Lightning's, an older class name) that
    tracks ``monitor`` and holds a best score."""
    for key, state in states.items():
        if (isinstance(key, str) and "Checkpoint{" in key and isinstance(state, dict)
                and state.get("monitor") == monitor
                and state.get("best_model_score") is not None and state.get("best_model_path")):
            return state
    return None


def _rebased(state: dict, folder: Path) -> dict:
    """``state`` with its paths moved into ``folder`` (the run folder was moved), if the best
    file is there; else unchanged (Lightning then keeps only the best path, with a warning)."""
    best = folder / Path(state.get("best_model_path") or "").name
    if not state.get("best_model_path") or not best.is_file():
        return state

    def move(path):
        return os.fspath(folder / Path(path).name) if path else path

    return {**state, "dirpath": os.fspath(folder),
            "best_model_path": move(state["best_model_path"]),
            "kth_best_model_path": move(state.get("kth_best_model_path")),
            "last_model_path": move(state.get("last_model_path")),
            "best_k_models": {move(k): v for k, v in (state.get("best_k_models") or {}).items()
                              if (folder / Path(k).name).is_file()}}


class SaveLast(Checkpoint):
    """Writes ``path`` (RUN_DIR/checkpoints/last.ckpt) every ``every`` optimizer steps,
    whatever the validation metric did: after each validation when the run validates (after
    the best checkpoint, so the saved state knows the best score), else at the end of every
    ``every``-th step. A Checkpoint subclass so that Lightning runs it after ModelCheckpoint
    (it orders checkpoint callbacks last, keeping their order)."""

    def __init__(self, path: Path, every: int, after_validation: bool) -> None:
        self.path = Path(path)
        self.every = every
        self.after_validation = after_validation
        self._saved_step = -1

    def _save(self, trainer) -> None:
        if trainer.global_step in (0, self._saved_step) or trainer.sanity_checking \
                or trainer.state.fn != "fit":
            return
        save_checkpoint(trainer, self.path)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.after_validation and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.after_validation:
            self._save(trainer)


class SeqLenWarmup(pl.Callback):
    """Follows ``schedule`` per optimizer step; ``checkpointing(bases)`` says whether blocks
    are recomputed in the backward pass for micro-batches of that many bases."""

    def __init__(self, schedule: SeqLenSchedule, checkpointing: Callable[[int], bool]) -> None:
        self.schedule = schedule
        self.checkpointing = checkpointing
        self._stage: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        stage = self.schedule.stage_at(trainer.global_step)
        shape = tuple(batch["tokens"].shape)
        if shape != (stage.batch_size, stage.seq_len):
            raise RuntimeError(f"batch of shape {shape} at step {trainer.global_step}, the "
                               f"schedule says ({stage.batch_size}, {stage.seq_len})")
        if stage.index != self._stage:
            self._stage = stage.index
            pl_module.model.config.gradient_checkpointing = self.checkpointing(stage.tokens)
            if self.schedule.n_warmup_stages:
                # step numbers count optimizer steps done (mambadna.train.loggers): this
                # stage's first step is the next one
                info(f"sequence-length stage {stage.index + 1}/"
                     f"{self.schedule.n_warmup_stages + 1} from step "
                     f"{trainer.global_step + 1}: seq_len {stage.seq_len}, batch "
                     f"{stage.batch_size} per device")


def _format(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"


class LogLines(pl.Callback):
    """One plain line every ``every`` optimizer steps and after each validation, for logs of
    non-interactive runs (batch jobs, pipes) where a progress bar would be noise.

    bases_per_step: bases of one optimizer step over all devices, for the throughput figure.
    """

    def __init__(self, every: int, bases_per_step: Callable[[int], int]) -> None:
        self.every = every
        self.bases_per_step = bases_per_step
        self._last: tuple[float, int] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._last = (time.monotonic(), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or self._last is None or step == self._last[1]:
            return
        t0, s0 = self._last
        now = time.monotonic()
        bases = sum(self.bases_per_step(s) for s in range(s0, step))
        metrics = trainer.callback_metrics
        parts = [f"step {step}/{trainer.max_steps}"]
        parts += [f"{k} {_format(float(metrics[k]))}" for k in ("train_loss", "train_bpb",
                                                                 "train_acc", "lr")
                  if k in metrics]
        parts.append(f"{bases / max(now - t0, 1e-9):,.0f} bases/s")
        info(" | ".join(parts))
        self._last = (now, step)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        shown = [f"{k} {_format(float(v))}" for k, v in sorted(metrics.items())
                 if k.startswith("val_")]
        if shown:
            info(f"validation at step {trainer.global_step}: " + " | ".join(shown))


class AttemptMarker(pl.Callback):
    """Writes the step a (resumed) attempt starts from into its log folder, so the metrics of
    all attempts can be merged without the rows an interrupted attempt logged past its last
    checkpoint."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / "start_step").write_text(f"{trainer.global_step}\n")


class SaveOnInterrupt(pl.Callback):
    """Save ``path`` (RUN_DIR/checkpoints/last.ckpt) when training stops with an exception or
    Ctrl-C after at least one optimizer step, so ``--resume`` loses at most one step.

    Why not Lightning's ``OnExceptionCheckpoint``: tried in its place (Lightning 2.6), the
    resumed run of tests/train/test_pretrain.py::test_interrupt_and_resume_matches_an_
    uninterrupted_run logged steps [1, 2, 3, 5, 6, 7] instead of [1 .. 6] (one step lost, the
    rest one late), because it saves the loop counters as they are mid-batch, where Lightning's
    restore assumes a save at a batch end (see ``_as_if_saved_at_batch_end``); it also writes
    the file in place (a kill while writing leaves a truncated checkpoint) and deletes it at
    teardown. This callback is kept because resume stays bit-exact with it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.global_step == 0 or trainer.state.fn != "fit":
            return
        save_resumable(trainer, self.path)
        info(f"saved {self.path} at step {trainer.global_step}; continue with "
                       "--resume")


def save_resumable(trainer: pl.Trainer, path: str | Path) -> None:
    """``save_checkpoint`` with the loop counters of a save at the end of the last optimizer
    step, wherever training stopped (an interrupt, or the end of ``fit``): a run resumed from
    it (``--resume``, with a higher --max-steps after a finished run) logs and numbers its
    steps on from there, as an uninterrupted run does."""
    loop = trainer.fit_loop.epoch_loop
    saved = (copy.deepcopy(loop.batch_progress.state_dict()), loop._batches_that_stepped)
    _as_if_saved_at_batch_end(trainer)
    try:
        save_checkpoint(trainer, path)
    finally:
        loop.batch_progress.load_state_dict(saved[0])
        loop._batches_that_stepped = saved[1]


def _as_if_saved_at_batch_end(trainer) -> None:
    """Set Lightning's loop counters to what a save in ``on_train_batch_end`` of the last
    optimizer step records.

    Lightning restores the counters assuming a checkpoint was written at a batch end (before
    the batch counts as completed and before the logging step advances). An interrupt can come
    anywhere: while the next batch is fetched or run, or between the micro-batches of one
    optimizer step. Without this, a resumed run logs its steps one late and, with gradient
    accumulation, would group micro-batches differently from the data stream (which restarts
    at micro-batch ``global_step * accumulate``).
    """
    loop = trainer.fit_loop.epoch_loop
    progress = loop.batch_progress
    extra = progress.total.processed - trainer.global_step * trainer.accumulate_grad_batches
    for count in (progress.total, progress.current):
        done = count.processed - max(0, extra)
        count.ready = count.started = count.processed = done
        count.completed = done - 1
    loop._batches_that_stepped = trainer.global_step - 1
