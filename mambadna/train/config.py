"""Training configuration: typed dataclasses with one line of help per field, YAML round-trip.

Torch-free (the CLI builds its options from these fields without importing torch). Values are
resolved in this order, later winning: field defaults < ``RUN_DIR/config.yaml`` (on --resume)
< ``--config YAML`` < command-line flags. Unknown YAML keys are a ConfigError that lists the
valid ones. ``config.yaml`` in a run folder holds every field plus a ``resolved`` section
(batch sizes, warmup stages, data split, model config) that is written for the record and
ignored when the file is read back.
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mambadna.errors import ConfigError

STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")
PRESET_NAMES = ("tiny", "paper-1.4m", "paper-7m")
CHECKPOINTING = ("auto", "on", "off")
RUN_CONTROLS = ("resume", "force", "verbose")  # how to run, not what: not in config.yaml
LOGGERS = ("csv", "tensorboard")  # mambadna.train.loggers.LOGGERS (that module needs torch)
RESOLVED_KEY = "resolved"


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with CLI help (and optional CLI metadata: flag, choices, cli)."""
    return field(default=default, metadata={"help": help, **meta})


def _meta(help: str, **meta: Any) -> dict[str, Any]:
    """Metadata of a list or dict field (declared with field(default_factory=...))."""
    return {"help": help, **meta}


@dataclass
class TrainConfig:
    """What pretraining and finetuning share: run folder, model, batches, optimizer, devices."""

    out_dir: str = _f("", "Run folder: model/, checkpoints/, metrics.csv, config.yaml.",
                      flag="-o/--out-dir")
    preset: str | None = _f("tiny", "Model size preset of a new model.", choices=PRESET_NAMES)
    model: dict = field(default_factory=dict, metadata=_meta(
        "ModelConfig fields overriding the preset, e.g. {bidirectional: true}.", cli=False))
    rc_equivariant: bool | None = _f(None, "Build an RC-equivariant model (Caduceus-PS "
                                           "parameter sharing: both strands through the same "
                                           "weights, no extra parameters; cannot stream). "
                                           "Default: off, or the --from model's setting.")
    seq_len: int = _f(1024, "Window length in bases (the target length of the warmup).")
    batch_size: int = _f(8, "Windows per device and micro-batch at --seq-len.")
    tokens_per_step: int | None = _f(None, "Bases per optimizer step over all devices and "
                                           "accumulation; sets the batch size.")
    accumulate: int = _f(1, "Micro-batches per optimizer step (gradient accumulation).")
    warmup_start: int | None = _f(None, "Sequence-length warmup: first window length, doubled "
                                        "in stages up to --seq-len (tokens per step constant).")
    warmup_stage: float = _f(0.0, "Length of each warmup stage, in --warmup-unit.")
    warmup_unit: str = _f("steps", "Unit of --warmup-stage; an epoch is the optimizer steps "
                                   "that see as many bases as the training data holds.",
                          choices=("steps", "epochs"))
    max_steps: int = _f(2000, "Optimizer steps to train.")
    lr: float = _f(1e-3, "Peak learning rate (AdamW).")
    lr_warmup: float = _f(0.1, "Fraction of --max-steps with linear learning-rate warmup.")
    min_lr_ratio: float = _f(0.1, "Final learning rate of the cosine decay, as a fraction of "
                                  "--lr.")
    weight_decay: float = _f(0.1, "AdamW weight decay (not on norms, biases, A_log, D).")
    adam_betas: list = field(default_factory=lambda: [0.9, 0.95],
                             metadata=_meta("AdamW betas.", cli=False))
    grad_clip: float = _f(1.0, "Clip the gradient norm to this (0: no clipping).")
    rc_prob: float = _f(0.5, "Probability of reverse-complementing a training window.")
    max_n_fraction: float = _f(0.1, "Skip windows with a larger fraction of N.")
    val_fraction: float = _f(0.05, "Share of bases held out for validation when no validation "
                                   "data is given (whole records if possible).")
    val_every: int = _f(200, "Optimizer steps between validations and checkpoints.")
    val_windows: int = _f(32, "Validation windows (per label when finetuning).")
    gradient_checkpointing: str = _f("auto", "Recompute blocks in the backward pass to save "
                                             "memory; auto: on when a micro-batch holds "
                                             "--checkpoint-from bases or more.",
                                     choices=CHECKPOINTING)
    checkpoint_from: int = _f(65536, "Bases per device micro-batch (window length x batch) "
                                     "from which auto gradient checkpointing turns on.")
    precision: str = _f("auto", "auto (bf16-mixed on GPU, 32-true on CPU) or a Lightning "
                                "precision (32-true, bf16-mixed, 16-mixed).")
    accelerator: str = _f("auto", "auto, cpu, gpu or cuda.")
    devices: str = _f("auto", "Devices per node: a number, a list like 0,1, or auto.")
    num_nodes: int = _f(1, "Nodes (machines) to train on.")
    strategy: str = _f("auto", "auto (ddp on several devices), ddp, fsdp, ddp_spawn.",
                       choices=STRATEGIES)
    context_parallel: int = _f(1, "Devices that split each window along its length (context "
                                  "parallelism, exact): the devices x nodes are this many "
                                  "times the data-parallel replicas.")
    seed: int = _f(0, "Random seed of weights and data.")
    num_workers: int = _f(2, "DataLoader worker processes per device.")
    log_every: int = _f(50, "Optimizer steps between log lines and metric rows.")
    logger: str = _f("csv", "Metrics: csv (RUN_DIR/metrics.csv), or tensorboard (the CSV plus "
                            "event files in RUN_DIR/tensorboard/; pip install "
                            "'mambadna[tensorboard]').", choices=LOGGERS)
    verbose: bool = _f(False, "Show Lightning's tips, hardware lines and deprecation notices.")
    resume: bool = _f(False, "Continue the run in --out-dir from checkpoints/last.ckpt.")
    force: bool = _f(False, "Replace an earlier run in --out-dir.")

    def __post_init__(self) -> None:
        self._coerce_all()
        self._check()

    def _coerce_all(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _coerce(f, getattr(self, f.name), type(self).__name__))

    def _check(self) -> None:
        if not self.out_dir:
            raise ConfigError("no run folder given", fix="pass -o RUN_DIR")
        positive = ("seq_len", "batch_size", "accumulate", "max_steps", "val_every",
                    "num_nodes", "log_every", "checkpoint_from", "context_parallel")
        for name in positive:
            _require(getattr(self, name) >= 1, name, "must be at least 1")
        for name in ("tokens_per_step", "warmup_start"):
            value = getattr(self, name)
            _require(value is None or value >= 1, name, "must be at least 1")
        for name in ("lr_warmup", "min_lr_ratio", "rc_prob", "max_n_fraction"):
            _require(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        _require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        _require(self.lr > 0, "lr", "must be positive")
        for name in ("weight_decay", "grad_clip", "warmup_stage", "val_windows", "num_workers"):
            _require(getattr(self, name) >= 0, name, "must not be negative")
        _require(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
                 "adam_betas", "must be two numbers in [0, 1)")
        if isinstance(self.devices, int) and (self.devices * self.num_nodes) % \
                self.context_parallel:
            raise ConfigError(f"--context-parallel {self.context_parallel} does not divide the "
                              f"{self.devices * self.num_nodes} devices (devices x nodes)",
                              fix="use a --context-parallel that divides the devices, or "
                                  "more --devices")
        if self.context_parallel > 1 and self.strategy not in ("auto", "ddp"):
            raise ConfigError(f"--context-parallel runs with the ddp strategy, not "
                              f"{self.strategy}", fix="use --strategy ddp (or auto)")
        if self.warmup_start not in (None, self.seq_len) and self.warmup_stage <= 0:
            raise ConfigError("--warmup-start needs --warmup-stage (the length of each stage)",
                              fix="e.g. --warmup-stage 1000 (steps) or --warmup-unit epochs")

    def to_dict(self) -> dict[str, Any]:
        """Every field but the run controls (resume, force), YAML-ready."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_CONTROLS}

    def uses_checkpointing(self, bases: int) -> bool:
        """Whether blocks are recomputed in the backward pass for micro-batches of ``bases``
        bases (activation memory grows with window length x batch, not length alone; with
        context parallelism a device holds 1 / context_parallel of them)."""
        if self.gradient_checkpointing == "auto":
            return bases // self.context_parallel >= self.checkpoint_from
        return self.gradient_checkpointing == "on"


@dataclass
class PretrainConfig(TrainConfig):
    """Next-base pretraining on genomes (FASTA/FASTQ/BAM) or a token store."""

    genomes: list = field(default_factory=list, metadata=_meta(
        "Genome files to pretrain on (tokenized into RUN_DIR/store).", flag="--genome",
        multiple=True))
    store: str | None = _f(None, "A token store (mambadna tokenize) instead of --genome.")
    val_genomes: list = field(default_factory=list, metadata=_meta(
        "Files for validation (default: held out from the training data).",
        flag="--val-genome", multiple=True))
    val_store: str | None = _f(None, "A token store for validation instead of --val-genome.")
    lr: float = _f(8e-3, "Peak learning rate (AdamW; the Mamba paper's DNA value).")

    def _check(self) -> None:
        super()._check()
        if bool(self.genomes) == bool(self.store):
            raise ConfigError("give either --genome FILE... or --store DIR (exactly one)",
                              fix="e.g. mambadna pretrain --genome genome.fa -o RUN_DIR")
        if self.val_genomes and self.val_store:
            raise ConfigError("give --val-genome or --val-store, not both")
        if self.preset is None:
            raise ConfigError("pretraining needs a model --preset", fix="e.g. --preset tiny")


@dataclass
class FinetuneConfig(TrainConfig):
    """Sequence classification (species) from a manifest TSV ``path label [split]``."""

    manifest: str = _f("", "TSV with columns path, label[, split] (paths relative to it).")
    from_model: str | None = _f(None, "Pretrained model folder to start from (its backbone; "
                                      "a new classification head).", flag="--from")
    preset: str | None = _f(None, "Model size preset when training from scratch (instead of "
                                  "--from).", choices=PRESET_NAMES)
    seq_len: int = _f(4096, "Window length in bases (the target length of the warmup). "
                            "Species signal is sparse: 4 kb windows beat 1 kb ones.")
    pooling: str | None = _f("mean", "Classifier input: mean over positions or the last "
                                     "position (the Mamba paper's; trails mean pooling and "
                                     "k-mer counting at 1-4 kb).", choices=("last", "mean"))
    strict: bool = _f(False, "Refuse a --from model folder whose config has no weights "
                             "checksum (default: load it with a warning).")
    head_lr_scale: float = _f(1.0, "Learning rate of the new classification head as a multiple "
                                   "of --lr.")
    class_weights: dict = field(default_factory=dict, metadata=_meta(
        "Loss weight per label (label=weight,...); missing labels 1.", parse="mapping"))
    max_steps: int = _f(1000, "Optimizer steps to train.")
    val_fraction: float = _f(0.1, "Share of a label's bases held out for validation when the "
                                  "manifest has no val rows for it.")

    def _check(self) -> None:
        super()._check()
        if not self.manifest:
            raise ConfigError("no manifest given", fix="pass --manifest TSV (path, label, split)")
        if (self.from_model is None) == (self.preset is None):
            raise ConfigError("give either --from MODEL_DIR or --preset NAME (exactly one)",
                              fix="--from a pretrained model, or --preset tiny to train from "
                                  "scratch")
        _require(self.head_lr_scale > 0, "head_lr_scale", "must be positive")
        for label, weight in self.class_weights.items():
            _require(weight > 0, f"class_weights[{label}]", "must be positive")


def _require(ok: bool, name: str, what: str) -> None:
    if not ok:
        err = ConfigError(f"{name.replace('_', '-')} {what}")
        err.key = name.split("[", 1)[0]  # load_config names the file and line of the key
        raise err


def _scalar(kind: str, value: Any, where: str) -> Any:
    """Coerce ``value`` to int/float/str/bool (YAML and the CLI hand over strings at times)."""
    try:
        if kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1",
                                                             "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number) or number != int(number):
                raise ValueError
            return int(number)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {kind}, got {value!r}") from None


def _coerce(f, value: Any, owner: str) -> Any:
    kind = str(f.type)
    where = f"{owner}.{f.name}"
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} must not be empty")
    base = kind.replace("| None", "").strip()
    if base == "list":
        items = value if isinstance(value, (list, tuple)) else [value]
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in items]
    if base == "dict":
        if f.metadata.get("parse") == "mapping" and isinstance(value, str):
            return parse_mapping(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if f.name == "devices":
        return value if str(value) == "auto" or "," in str(value) else _scalar("int", value,
                                                                                where)
    value = _scalar(base, os.fspath(value) if isinstance(value, os.PathLike) else value, where)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where} is {value!r}, expected one of {', '.join(choices)}")
    return value


def parse_mapping(text: str, where: str = "value") -> dict[str, float]:
    """``"human=2,chimp=1.5"`` -> {"human": 2.0, "chimp": 1.5}."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, number = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: {item!r} is not label=weight",
                              fix="write label=weight pairs separated by commas")
        out[key.strip()] = _scalar("float", number.strip(), f"{where}[{key.strip()}]")
    return out


def field_names(cls: type[TrainConfig]) -> list[str]:
    return [f.name for f in fields(cls)]


def _suggestion(key: str, known: list[str]) -> str | None:
    """The valid key nearest to ``key`` (dashes read as underscores), if one is close."""
    import difflib

    normal = str(key).replace("-", "_").lower()
    if normal in known:
        return normal
    found = difflib.get_close_matches(normal, known, n=1, cutoff=0.6)
    return found[0] if found else None


def _from_mapping(cls: type[TrainConfig], data: dict[str, Any], origin: str,
                  lines: dict[str, int] | None = None) -> dict[str, Any]:
    """Check the keys of a YAML mapping; drop the ``resolved`` record. ``lines``: the line of
    each key in the file ``origin`` (an unknown key's error names it)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of option: value, got {type(data).__name__}",
                          path=origin, line=1 if lines is not None else None)
    data = {k: v for k, v in data.items() if k != RESOLVED_KEY}
    known = field_names(cls)
    unknown = [k for k in data if k not in known]
    if unknown:
        first = unknown[0]
        nearest = _suggestion(first, known)
        hint = f"did you mean {nearest}? " if nearest else ""
        raise ConfigError(f"unknown key(s) {', '.join(map(repr, unknown))} in a "
                          f"{cls.__name__.removesuffix('Config').lower()} config",
                          path=origin if lines is not None else None,
                          line=(lines or {}).get(first),
                          fix=f"{hint}valid keys are: {', '.join(sorted(known))}")
    return data


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key of a YAML mapping (empty if it is not one)."""
    import yaml

    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value
            if isinstance(key, yaml.ScalarNode)}


def read_yaml(path: str | os.PathLike, with_lines: bool = False) -> Any:
    """The YAML file at ``path`` (safe_load); with ``with_lines``, (data, line of each key)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        from mambadna.errors import InputFileError

        raise InputFileError("config file not found", path=path)
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
        lines = _key_lines(text) if with_lines else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"not valid YAML ({getattr(err, 'problem', err)})", path=path,
                          line=mark.line + 1 if mark else None) from None
    return (data, lines) if with_lines else data


def _read_config_file(cls: type[TrainConfig], path: str | os.PathLike) -> dict[str, Any]:
    """A config file's keys, each value checked against its field: an unknown key or a bad
    value is a ConfigError naming the file and the line."""
    data, lines = read_yaml(path, with_lines=True)
    data = _from_mapping(cls, data, os.fspath(path), lines)
    by_name = {f.name: f for f in fields(cls)}
    for key, value in data.items():
        try:
            _coerce(by_name[key], value, cls.__name__)
        except ConfigError as err:
            raise err.with_location(path=path, line=lines.get(key)) from None
    return data


def _key_of(err: ConfigError, keys) -> str | None:
    """The config key a check's error is about (ConfigError.key, set by _require)."""
    key = getattr(err, "key", None)
    return key if key in keys else None


def load_config(cls: type[TrainConfig], config_file: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a config: defaults < RUN_DIR/config.yaml (resume) < config_file < overrides.

    Errors about a key that came from a file name the file and the key's line, and an
    unknown key gets the nearest valid one ("did you mean seq_len?")."""
    overrides = dict(overrides or {})
    files: list[tuple[str, dict[str, Any]]] = []  # (path, its keys), later files win
    from_file = {}
    if config_file is not None:
        from_file = _read_config_file(cls, config_file)
        files.append((os.fspath(config_file), from_file))
    _from_mapping(cls, overrides, "options")
    merged = {**from_file, **overrides}
    if merged.get("resume") and merged.get("out_dir"):
        saved = Path(merged["out_dir"]) / "config.yaml"
        if saved.is_file():
            saved_keys = _read_config_file(cls, saved)
            files.insert(0, (os.fspath(saved), saved_keys))
            merged = {**saved_keys, **merged}
    try:
        return cls(**merged)
    except ConfigError as err:
        for path, keys in reversed(files):
            key = _key_of(err, keys)
            if key is not None and key not in overrides:
                _, lines = read_yaml(path, with_lines=True)
                raise err.with_location(path=path, line=lines.get(key)) from None
        raise


def dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def field_default(f) -> Any:
    """The default of a dataclass field (calling its factory)."""
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None
