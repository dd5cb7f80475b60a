"""``pretrain`` and ``finetune``: from a config to a trained, exported model in a run folder.

Everything that can be wrong with the input (files, manifest, labels, lengths, the warmup, the
resume checkpoint, the run folder) is checked before the first training step. Both entry points
run on one CPU, one GPU, several GPUs (DDP by default, FSDP selectable) and several nodes; see
``mambadna.train`` for the SLURM launch.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mambadna._version import __version__
from mambadna.data.datasets import LMExamples, SpeciesExamples, WindowDataset
from mambadna.data.module import WindowDataModule
from mambadna.data.prepare import pretrain_data, species_data, tokenized
from mambadna.data.sampling import TokenSource, WindowSampler, tile_windows
from mambadna.data.schedule import SeqLenSchedule
from mambadna.errors import ConfigError, InputError, UnsafeFileError
from mambadna.io.files import check_path
from mambadna.manifests.labelled import ManifestRow, read_manifest
from mambadna.model import MambaDNA, ModelConfig, load_model
from mambadna.model.memory import check_device_fits
from mambadna.model.network import check_fits
from mambadna.train.callbacks import (
    AttemptMarker,
    BestCheckpoint,
    LogLines,
    SaveLast,
    SaveOnInterrupt,
    SeqLenWarmup,
    save_resumable,
)
from mambadna.train.config import FinetuneConfig, PretrainConfig, TrainConfig, dump_yaml
from mambadna.train.loggers import lightning_output, make_loggers
from mambadna.train.modules import ClassifierModule, LanguageModelModule, OptimSettings
from mambadna.train.runfolder import RunFolder, is_leader, launch_id, merge_metrics, write_atomic


@dataclass
class RunResult:
    """What a training run produced (paths are None on processes other than rank 0)."""

    out_dir: Path
    model_dir: Path | None
    best_model_dir: Path | None
    metrics: object = None  # pandas.DataFrame of RUN_DIR/metrics.csv
    final: dict[str, float] = field(default_factory=dict)
    is_global_zero: bool = True


# ---------------------------------------------------------------------- trainer


def _uses_gpu(config: TrainConfig) -> bool:
    return config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available())


def _strategy(config: TrainConfig):
    if config.strategy != "fsdp":
        return config.strategy
    from lightning.pytorch.strategies import FSDPStrategy

    from mambadna.model.network import Block

    # One FSDP unit per Mamba block; the tied embedding/LM head stay in the root unit.
    return FSDPStrategy(auto_wrap_policy={Block})


def _trainer(config: TrainConfig, folder: RunFolder, monitor: tuple[str, str] | None,
             callbacks: Sequence[pl.Callback]) -> pl.Trainer:
    precision = config.precision
    if precision == "auto":
        precision = "bf16-mixed" if _uses_gpu(config) else "32-true"
    attempt = folder.next_attempt() if is_leader() else 0
    # The best checkpoint (validated runs only) and last.ckpt are kept apart: last.ckpt is
    # rewritten every --val-every steps whether or not validation improved, so a killed run
    # resumes from its last written step, not from its best one.
    checkpoint = BestCheckpoint(
        dirpath=folder.checkpoints, filename="best-{step}", save_last=False,
        monitor=monitor[0] if monitor else None, mode=monitor[1] if monitor else "min",
        save_top_k=1 if monitor else 0)
    last = SaveLast(folder.last_checkpoint, config.val_every, after_validation=bool(monitor))
    interactive = sys.stderr.isatty()
    return pl.Trainer(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=_strategy(config), precision=precision, max_steps=config.max_steps,
        max_epochs=-1, accumulate_grad_batches=config.accumulate,
        gradient_clip_val=config.grad_clip or None,
        val_check_interval=config.val_every * config.accumulate if monitor else None,
        check_val_every_n_epoch=None, limit_val_batches=None if monitor else 0,
        num_sanity_val_steps=0, log_every_n_steps=config.log_every,
        logger=make_loggers(config.logger, folder.path, attempt),
        callbacks=[checkpoint, last, SaveOnInterrupt(folder.last_checkpoint),
                   AttemptMarker(folder.logs / f"version_{attempt}"), *callbacks],
        enable_progress_bar=interactive, enable_model_summary=interactive,
        use_distributed_sampler=False,  # the data module shards by rank itself
        default_root_dir=folder.path)


def _replicas(config: TrainConfig, world: int) -> int:
    """Data-parallel replicas: the world over the devices that share one window."""
    if world % config.context_parallel:
        raise ConfigError(f"--context-parallel {config.context_parallel} does not divide the "
                          f"{world} devices (devices x nodes)",
                          fix=f"use a --context-parallel that divides {world}, or more devices")
    return world // config.context_parallel


def _check_segments(config: TrainConfig, schedule: SeqLenSchedule, d_conv: int) -> None:
    """Every warmup stage's window must leave each context-parallel device d_conv - 1 bases."""
    cp = config.context_parallel
    for stage in schedule.stages:
        if cp > 1 and stage.seq_len // cp < max(d_conv - 1, 1):
            raise ConfigError(f"a window of {stage.seq_len} bases split over "
                              f"--context-parallel {cp} devices leaves fewer than "
                              f"{max(d_conv - 1, 1)} bases per device",
                              fix="use longer windows (--seq-len, --warmup-start) or a "
                                  "smaller --context-parallel")


def _schedule(config: TrainConfig, world: int, train_bases: int) -> tuple[SeqLenSchedule, dict]:
    """Per-device batch size (from --tokens-per-step if given) and the warmup schedule; with
    context parallelism the devices of one window count once (world = replicas x cp)."""
    cp = config.context_parallel
    world = _replicas(config, world)
    per_batch = config.seq_len * config.accumulate * world
    batch = config.batch_size
    if config.tokens_per_step is not None:
        if config.tokens_per_step % per_batch:
            raise ConfigError(
                f"--tokens-per-step {config.tokens_per_step} is not a multiple of seq-len x "
                f"accumulate x devices = {config.seq_len} x {config.accumulate} x {world}",
                fix=f"use a multiple of {per_batch}, e.g. {per_batch * 8}")
        batch = config.tokens_per_step // per_batch
    step_bases = batch * per_batch
    steps_per_epoch = max(1, math.ceil(train_bases / step_bases))
    stage = config.warmup_stage * (steps_per_epoch if config.warmup_unit == "epochs" else 1)
    schedule = SeqLenSchedule(config.seq_len, batch, config.warmup_start,
                              max(1, round(stage)) if config.warmup_start else 0,
                              config.max_steps)
    resolved = {"world_size": world * cp, "data_parallel": world, "context_parallel": cp,
                "batch_size_per_device": batch,
                "tokens_per_step": step_bases, "steps_per_epoch": steps_per_epoch,
                "stages": [{"seq_len": s.seq_len, "batch_size": s.batch_size,
                            "start_step": s.start_step} for s in schedule.stages]}
    return schedule, resolved


def _trainer_record(trainer: pl.Trainer, config: TrainConfig,
                    schedule: SeqLenSchedule) -> dict:
    """How Lightning resolved the hardware settings, for config.yaml."""
    return {"precision": str(trainer.precision), "strategy": type(trainer.strategy).__name__,
            "accelerator": type(trainer.accelerator).__name__,
            "gradient_checkpointing": config.uses_checkpointing(schedule.stages[-1].tokens)}


def _write_config(folder: RunFolder, config: TrainConfig, resolved: dict) -> None:
    record = {"package_version": __version__, "launch": launch_id(),
              "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              **resolved}
    write_atomic(folder.config, dump_yaml({**config.to_dict(), "resolved": record}))


def _check_device_memory(config: TrainConfig, trainer: pl.Trainer, model: ModelConfig,
                         schedule: SeqLenSchedule) -> None:
    """On a GPU, refuse a model and micro-batch that cannot fit (weights, gradients, AdamW,
    activations) before the first step, saying what fits; off CUDA nothing is checked here
    (the host check ran when the config was read)."""
    if not _uses_gpu(config):
        return
    fsdp = config.strategy == "fsdp"
    for stage in schedule.stages:  # the micro-batch holds the same tokens in every stage
        check_device_fits(model, trainer.strategy.root_device, tokens=stage.tokens,
                          training=True, bf16="bf16" in str(trainer.precision),
                          checkpointing=config.uses_checkpointing(stage.tokens),
                          shards=trainer.world_size if fsdp else 1)


# ---------------------------------------------------------------------- export


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def load_checkpoint(checkpoint: Path) -> dict:
    """A Lightning checkpoint read with ``weights_only=True``: tensors, numbers, strings and
    containers only. A checkpoint is a pickle; a full unpickler would run any code a crafted
    file names, so a file that needs anything else is refused (UnsafeFileError), never run."""
    import pickle

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the global it refused ("Unsupported global: GLOBAL module.name ...");
        # without one the file is merely not a checkpoint (garbage, truncated)
        found = next((line.strip() for line in str(err).splitlines()
                      if "GLOBAL" in line or "Unsupported global" in line), None)
        if found is None:
            raise InputError(f"not a readable checkpoint ({_first_line(err)})",
                             path=checkpoint, fix="start the run again without --resume "
                                                  "(or with --force)") from None
        raise UnsafeFileError(
            f"refused: the checkpoint needs more than tensors and plain data to load "
            f"({found[:200]}); loading it would run code named in the file",
            path=checkpoint,
            fix="resume only from checkpoints this mambadna wrote; if this one is yours, "
                "start the run again without --resume (or with --force)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise InputError(f"not a readable checkpoint ({_first_line(err)})",
                         path=checkpoint,
                         fix="start the run again without --resume (or with --force)") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise InputError("not a Lightning checkpoint (no state_dict)", path=checkpoint,
                         fix="start the run again without --resume (or with --force)")
    return state


def _load_weights(model: MambaDNA, checkpoint: Path) -> MambaDNA:
    """Load the ``model.*`` weights of a Lightning checkpoint into ``model``."""
    state = load_checkpoint(checkpoint)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    return model


def _export(model_config: ModelConfig, checkpoint: Path, target: Path,
            labels: list[str] | None, info: dict) -> Path:
    config = ModelConfig.from_dict({**model_config.to_dict(), "gradient_checkpointing": False})
    model = _load_weights(MambaDNA(config), checkpoint)
    return model.save_pretrained(target, labels=labels, training_info=info)


def _fit(config: TrainConfig, folder: RunFolder, module: pl.LightningModule,
         data: WindowDataModule, trainer: pl.Trainer, labels: list[str] | None,
         info: dict) -> RunResult:
    """Train, save last.ckpt, and (rank 0) export the final and best models, merge metrics."""
    ckpt = folder.last_checkpoint if config.resume else None
    # weights_only=True: Lightning's torch.load refuses pickled code (checked before, in _run,
    # with our error; this is the second lock). save_checkpoint's weights_only=False is a
    # different flag: save the optimizer and loop state too, not only the weights.
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException:
        # Lightning finishes the step in progress and SaveOnInterrupt writes last.ckpt, but
        # its exception is a SystemExit of status 0: a scheduler would think the run done
        raise SystemExit(128 + signal.SIGTERM) from None
    # the counters of a save at the last step's end: a finished run resumed with a higher
    # --max-steps numbers its steps on from there (a plain save after fit logged them one
    # late per attempt)
    save_resumable(trainer, folder.last_checkpoint)
    trainer.strategy.barrier("mambadna-export")
    if not trainer.is_global_zero:
        return RunResult(folder.path, None, None, is_global_zero=False)
    final = {k: float(v) for k, v in trainer.callback_metrics.items()
             if k.startswith(("val_", "train_"))}
    info = {**info, "steps": trainer.global_step, "final_metrics": final,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    model_config = module.model.config
    model_dir = _export(model_config, folder.last_checkpoint, folder.model, labels, info)
    best_dir = None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and Path(best).is_file():
        best_dir = _export(model_config, Path(best), folder.model_best, labels,
                           {**info, "checkpoint": Path(best).name})
    metrics = merge_metrics(folder)
    return RunResult(folder.path, model_dir, best_dir, metrics, final)


def _start(config: TrainConfig) -> RunFolder:
    """Seed everything, check/prepare the run folder (leader) or wait for it (others)."""
    pl.seed_everything(config.seed, workers=False, verbose=False)
    folder = RunFolder(config.out_dir)
    launch_id()
    if is_leader():
        folder.prepare(config.resume, config.force)
    else:
        folder.wait_prepared()
    return folder


def _stages_callbacks(config: TrainConfig, schedule: SeqLenSchedule, world: int):
    def bases(step: int) -> int:
        return schedule.stage_at(step).tokens * config.accumulate * world

    out: list[pl.Callback] = [SeqLenWarmup(schedule, config.uses_checkpointing)]
    if not sys.stderr.isatty():
        out.append(LogLines(config.log_every, bases))
    return out


# ---------------------------------------------------------------------- the run skeleton


@dataclass
class _Task:
    """What a task (pretraining, finetuning) brings to the shared run skeleton."""

    examples: LMExamples | SpeciesExamples
    """The training stream's examples (checked against every warmup stage's length)."""
    train_bases: int
    """Bases the training data holds (for --warmup-unit epochs)."""
    val: Callable[[], WindowDataset | None]
    """Builds the validation windows (after the schedule's checks, so errors come in order)."""
    monitor: tuple[str, str] | None
    """(metric, min/max) that picks the best checkpoint; None: no validation."""
    record: dict
    """What config.yaml records besides the resolved schedule and hardware."""
    module: Callable[[], pl.LightningModule]
    """Builds the LightningModule (after the trainer, so its weights depend on the seed only)."""
    labels: list[str] | None
    info: Callable[[dict], dict]
    """The exported model's training_info, from the resolved schedule."""


def _run(config: TrainConfig, prepare: Callable[[RunFolder, bool], _Task],
         callbacks: Sequence[pl.Callback]) -> RunResult:
    """Start the run folder, let ``prepare`` set the task up, check everything before the first
    step (the leader discards a folder it created if anything fails), then train and export.
    Lightning's tips and deprecation notices are hidden unless config.verbose."""
    with lightning_output(config.verbose):
        return _run_task(config, prepare, callbacks)


def _run_task(config: TrainConfig, prepare: Callable[[RunFolder, bool], _Task],
              callbacks: Sequence[pl.Callback]) -> RunResult:
    # TF32 for the fp32 products on the GPU, for the run only: set for the process and left,
    # it made every later fp32 product of the caller's process (an evaluation after training,
    # a test) differ from the CPU's by ~3e-3 instead of ~1e-6.
    before = torch.get_float32_matmul_precision()
    if _uses_gpu(config):
        torch.set_float32_matmul_precision("high")
    try:
        return _run_task_in(config, prepare, callbacks)
    finally:
        torch.set_float32_matmul_precision(before)


def _run_task_in(config: TrainConfig, prepare: Callable[[RunFolder, bool], _Task],
                 callbacks: Sequence[pl.Callback]) -> RunResult:
    folder = _start(config)
    leader = is_leader()
    try:
        if config.resume:
            load_checkpoint(folder.last_checkpoint)  # refuse an unsafe or broken one now
        task = prepare(folder, leader)
        trainer = _trainer(config, folder, task.monitor, ())
        schedule, resolved = _schedule(config, trainer.world_size, task.train_bases)
        _check_segments(config, schedule, task.record["model"]["d_conv"])
        resolved.update(_trainer_record(trainer, config, schedule))
        for stage in schedule.stages:
            task.examples.check(stage.seq_len)
        _check_device_memory(config, trainer, ModelConfig.from_dict(task.record["model"]),
                             schedule)
        val = task.val()
        if leader:
            _write_config(folder, config, {**resolved, **task.record})
            folder.mark_prepared()
    except BaseException:
        if leader:
            folder.discard_if_created()
        raise
    trainer.callbacks.extend([*_stages_callbacks(config, schedule, resolved["data_parallel"]),
                              *callbacks])
    module = task.module()
    datamodule = WindowDataModule(task.examples, schedule, seed=config.seed,
                                  accumulate=config.accumulate, val=val,
                                  num_workers=config.num_workers,
                                  context_parallel=config.context_parallel)
    return _fit(config, folder, module, datamodule, trainer, task.labels, task.info(resolved))


# ---------------------------------------------------------------------- pretraining


def _pretrain_sources(config: PretrainConfig, folder: RunFolder, leader: bool):
    """Token sources of the training and (optional) validation data."""
    if config.store:
        source = TokenSource.from_store(config.store)
    else:
        paths = [check_path(p) for p in config.genomes]
        source = (tokenized(paths, folder.store, reuse=config.resume) if leader
                  else TokenSource.from_store(folder.store))
    val = None
    if config.val_store:
        val = TokenSource.from_store(config.val_store)
    elif config.val_genomes:
        paths = [check_path(p) for p in config.val_genomes]
        store = folder.path / "val_store"
        val = (tokenized(paths, store, reuse=config.resume) if leader
               else TokenSource.from_store(store))
    return source, val


def _val_windows(config: TrainConfig, source: TokenSource, spans,
                 what: str = "the validation data") -> WindowDataset:
    windows = tile_windows(source, spans, config.seq_len, config.val_windows,
                           config.max_n_fraction)
    if not windows:
        longest = max((s.length for s in spans), default=0)
        raise ConfigError(
            f"{what} holds no window of {config.seq_len} bases with at most "
            f"{config.max_n_fraction:.0%} N (longest validation sequence: {longest})",
            fix="lower --seq-len, raise --val-fraction, or give longer validation data")
    return WindowDataset(source, windows, config.seq_len)


def _pretrain_task(config: PretrainConfig, folder: RunFolder, leader: bool) -> _Task:
    source, val_source = _pretrain_sources(config, folder, leader)
    data = pretrain_data(source, val_source, config.val_fraction)
    sampler = WindowSampler(source, data.train, max_n_fraction=config.max_n_fraction,
                            rc_prob=config.rc_prob, what="the training data")
    model_config = ModelConfig.from_preset(config.preset, **_model_overrides(config))
    check_fits(model_config)  # now, so that a run folder of a model too large is not left

    def module() -> pl.LightningModule:
        torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
        return LanguageModelModule(MambaDNA(model_config), OptimSettings.from_config(config),
                                   context_parallel=config.context_parallel)

    def info(resolved: dict) -> dict:
        return {"task": "next-base pretraining", "data": sorted(set(source.sources)),
                "split": data.split.get("rule"), "seq_len": config.seq_len,
                "tokens_per_step": resolved["tokens_per_step"], "preset": config.preset}

    return _Task(examples=LMExamples(sampler), train_bases=sampler.total_length,
                 val=lambda: (_val_windows(config, data.val_source, data.val) if data.val
                              else None),
                 monitor=("val_loss", "min") if data.val else None,
                 record={"split": data.split, "model": model_config.to_dict()},
                 module=module, labels=None, info=info)


def _model_overrides(config: TrainConfig) -> dict:
    """ModelConfig fields the run sets: ``model:`` of the config, then --rc-equivariant (the
    same weights serve both settings, so a causal model can be finetuned equivariant)."""
    rc = {} if config.rc_equivariant is None else {"rc_equivariant": config.rc_equivariant}
    return {**config.model, **rc}


def pretrain(config: PretrainConfig, *, callbacks: Sequence[pl.Callback] = ()) -> RunResult:
    """Next-base pretraining of a new ``config.preset`` model; see PretrainConfig.

    Writes the run folder (mambadna.train.runfolder) and returns its RunResult.
    callbacks: extra Lightning callbacks (monitoring, tests).
    """
    return _run(config, lambda folder, leader: _pretrain_task(config, folder, leader),
                callbacks)


# ---------------------------------------------------------------------- finetuning


def _classifier(config: FinetuneConfig, labels: list[str]) -> MambaDNA:
    """A classifier with ``len(labels)`` classes: a pretrained backbone or a new preset."""
    head = {"num_labels": len(labels), **_model_overrides(config)}
    if config.pooling:
        head["pooling"] = config.pooling
    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    if config.preset is not None:
        return MambaDNA(ModelConfig.from_preset(config.preset, **head))
    base = load_model(config.from_model, strict=config.strict)
    model = MambaDNA(ModelConfig.from_dict({**base.config.to_dict(), **head}))
    backbone = {k: v for k, v in base.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ConfigError(f"the model in {config.from_model} does not match the classifier "
                          f"config (missing {missing[:3]}, unexpected {unexpected[:3]})",
                          fix="do not override sizes in `model:` when finetuning --from")
    return model


def _class_weights(config: FinetuneConfig, labels: list[str]) -> list[float] | None:
    unknown = sorted(set(config.class_weights) - set(labels))
    if unknown:
        raise ConfigError(f"class weights given for unknown label(s) {', '.join(unknown)}",
                          fix=f"labels are: {', '.join(labels)}")
    if not config.class_weights:
        return None
    return [float(config.class_weights.get(label, 1.0)) for label in labels]


def _species_val(config: FinetuneConfig, data) -> WindowDataset:
    windows, targets = [], []
    for k, label in enumerate(data.labels):
        found = tile_windows(data.source, data.val[k], config.seq_len, config.val_windows,
                             config.max_n_fraction)
        if not found:
            raise ConfigError(f"label {label!r} has no validation sequence long enough for a "
                              f"window of {config.seq_len} bases", path=config.manifest,
                              fix="add longer val files for it, or lower --seq-len")
        windows += found
        targets += [k] * len(found)
    return WindowDataset(data.source, windows, config.seq_len, targets)


def _finetune_task(config: FinetuneConfig, rows: list[ManifestRow], folder: RunFolder,
                   leader: bool) -> _Task:
    paths = [row.path for row in rows]
    source = (tokenized(paths, folder.store, reuse=config.resume) if leader
              else TokenSource.from_store(folder.store))
    data = species_data(rows, source, config.manifest, config.val_fraction)
    samplers = [WindowSampler(source, data.train[k], max_n_fraction=config.max_n_fraction,
                              rc_prob=config.rc_prob, what=f"label {label!r} (train)")
                for k, label in enumerate(data.labels)]
    weights = _class_weights(config, data.labels)
    model = _classifier(config, data.labels)
    info = {"task": "sequence classification", "labels": data.labels,
            "manifest": os.fspath(config.manifest), "from_model": config.from_model,
            "seq_len": config.seq_len, "pooling": model.config.pooling}
    return _Task(examples=SpeciesExamples(samplers),
                 train_bases=sum(s.total_length for s in samplers),
                 val=lambda: _species_val(config, data), monitor=("val_acc", "max"),
                 record={"labels": data.labels, "split": data.split,
                         "model": model.config.to_dict()},
                 module=lambda: ClassifierModule(model, OptimSettings.from_config(config),
                                                 data.labels, weights, folder.path,
                                                 context_parallel=config.context_parallel),
                 labels=data.labels, info=lambda resolved: info)


def finetune(config: FinetuneConfig, *, callbacks: Sequence[pl.Callback] = ()) -> RunResult:
    """Train a sequence classifier on the manifest's labelled files; see FinetuneConfig."""
    rows = read_manifest(config.manifest)
    if config.from_model is not None and not Path(config.from_model).is_dir():
        raise ConfigError("--from: no model folder here", path=config.from_model,
                          fix="pass the model/ folder of a pretraining run")
    return _run(config, lambda folder, leader: _finetune_task(config, rows, folder, leader),
                callbacks)
