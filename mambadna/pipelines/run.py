"""A pipeline run, what classify and embed share: its options (``RunOptions``), its set-up
(``open_run``: model, windows, records, runner) and its provenance (``run_metadata``)."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field

import torch
from tqdm import tqdm

from mambadna._version import __version__
from mambadna.errors import ConfigError
from mambadna.io import ReadOptions
from mambadna.model import MambaDNA, context_groups
from mambadna.model.memory import check_device_fits
from mambadna.pipelines.inference import (
    Reducer,
    WindowRunner,
    prepare_model,
    resolve_device,
    trained_length,
)
from mambadna.pipelines.sources import RecordStream, SourceRecord
from mambadna.pipelines.tiling import WindowSpec
from mambadna.progress import bar

Inputs = str | os.PathLike | Sequence[str | os.PathLike]


@dataclass
class RunOptions:
    """How classify and embed read inputs and run the model (CLI options of the same names)."""

    window: int | None = None
    """Bases per window; default: the model's training length (training_info seq_len), else
    1024."""
    stride: int | None = None
    """Bases between window starts; default: the window (non-overlapping)."""
    min_window: int | None = None
    """Smallest last partial window kept; default: half the window."""
    batch_size: int = 8
    """Windows per forward pass (stream mode: records streamed side by side)."""
    rc_average: bool = False
    """Also run the reverse complement of each window and average the two strands' values
    (embeddings: the mean vector; classify, evaluate: the mean log-probabilities). Not with
    stream mode; nothing to do for an RC-equivariant model, already the same on both."""
    stream: bool = False
    """Carry the recurrent state along each record (context = the record so far)."""
    device: str | None = None
    """"cpu", "cuda", "cuda:1"...; None: CUDA if available, else CPU."""
    devices: int = 1
    """GPUs to split the records over (one process and one part file per GPU); with device
    "cpu", CPU processes (torch.distributed over gloo)."""
    context_parallel: int = 1
    """GPUs of ``devices`` that split each window along its length (context parallelism;
    the records are split over devices / context_parallel groups). In a rank's own options
    (devices 1) it is the size of the rank's group."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32"."""
    progress: bool | None = None
    """Progress bar on stderr; None: only when stderr is a terminal; False: never."""
    read: ReadOptions = field(default_factory=ReadOptions)
    """How the inputs are read and encoded (format, regions, filters, on_invalid ...)."""
    on_invalid: InitVar[str | None] = None
    """Deprecated (removed in 0.2): ``read=ReadOptions(on_invalid=...)``."""
    on_unknown: InitVar[str | None] = None
    """Deprecated (removed in 0.2): ``read=ReadOptions(on_unknown=...)``."""
    read_opts: InitVar[dict | None] = None
    """Deprecated (removed in 0.2): ``read=ReadOptions(...)``."""

    def __post_init__(self, on_invalid, on_unknown, read_opts) -> None:
        old = {**(read_opts or {}), **({"on_invalid": on_invalid} if on_invalid else {}),
               **({"on_unknown": on_unknown} if on_unknown else {})}
        if old:
            warnings.warn("RunOptions(on_invalid=, on_unknown=, read_opts=) is deprecated and "
                          "will be removed in mambadna 0.2; pass read=ReadOptions(...)",
                          DeprecationWarning, stacklevel=3)
            self.read = ReadOptions.of(self.read, **old)
        if isinstance(self.devices, bool) or not isinstance(self.devices, int) \
                or self.devices < 1:
            raise ConfigError(f"--devices must be a positive integer, got {self.devices!r}")
        cp = self.context_parallel
        if isinstance(cp, bool) or not isinstance(cp, int) or cp < 1 or (
                self.devices > 1 and self.devices % cp):
            raise ConfigError(f"--context-parallel {cp!r} must be a positive divisor of "
                              f"--devices {self.devices}",
                              fix="e.g. --devices 4 --context-parallel 4 (one window over 4 "
                                  "GPUs) or 2 (two groups of 2)")
        if self.devices > 1 and self.device not in (None, "auto", "cuda", "cpu"):
            raise ConfigError(f"--devices {self.devices} splits the work over CUDA devices "
                              f"(or CPU processes); it cannot be combined with --device "
                              f"{self.device}",
                              fix="leave --device out, or use --device cuda or --device cpu")


@dataclass
class Run:
    """A set-up run: the model on its device, the window spec, the records and the runner."""

    model: MambaDNA
    spec: WindowSpec
    records: RecordStream
    runner: WindowRunner
    progress: tqdm
    """The bases-done bar (mambadna.progress; a no-op when not shown)."""
    seen: list[tuple[SourceRecord, int]]


def open_run(model_or_dir, inputs: Inputs, opts: RunOptions, reducer: Callable[[MambaDNA],
             Reducer], label: str, *, select: Callable[[int], bool] | None = None,
             device: str | torch.device | None = None,
             check_model: Callable[[MambaDNA], None] | None = None,
             hidden_options: Callable[[MambaDNA], dict] | None = None) -> Run:
    """Load the model, check the inputs and build the runner (nothing is computed yet).

    ``seen`` collects (record, n_windows) of every record reached, in input order.
    hidden_options(model): WindowRunner's ``layers`` / ``append_cls`` (embed), checked
    against the model before any input is read.
    """
    records = RecordStream(inputs, opts.read, select=select)
    model = prepare_model(model_or_dir, resolve_device(device or opts.device))
    if check_model is not None:
        check_model(model)
    extra = hidden_options(model) if hidden_options is not None else {}
    spec = WindowSpec.resolve(window=opts.window, stride=opts.stride,
                              min_window=opts.min_window, stream=opts.stream,
                              trained_length=trained_length(model))
    total = records.total_bases() if spec.stride == spec.window else None
    progress = bar(label, total, unit="b", enabled=opts.progress)
    seen: list[tuple[SourceRecord, int]] = []
    context = None
    if opts.context_parallel > 1:  # a rank of a context-parallel run (parallel.run_rank)
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError(f"--context-parallel {opts.context_parallel} splits each window "
                              f"over several GPUs and needs --devices",
                              fix=f"add --devices {opts.context_parallel}")
        context = context_groups(opts.context_parallel)
    runner = WindowRunner(model, reducer(model), spec, batch_size=opts.batch_size,
                          rc_average=opts.rc_average, precision=opts.precision,
                          progress=progress, context=context,
                          on_record=lambda record, n: seen.append((record, n)), **extra)
    check_device_fits(model.config, model.device, training=False, bf16=runner.bf16,
                      tokens=opts.batch_size * spec.window * (2 if opts.rc_average else 1),
                      resident=True)  # before the first batch: say what fits, not OOM
    return Run(model, spec, records, runner, progress, seen)


def weights_checksum(model: MambaDNA) -> tuple[str, str]:
    """(sha256, of what): of model.safetensors when the model was saved or loaded, else of
    the state-dict tensors (name, dtype, shape, bytes, in order)."""
    if model.weights_sha256:
        return model.weights_sha256, "model.safetensors"
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest(), "state_dict tensors (model not saved)"


def run_metadata(run: Run, opts: RunOptions, inputs: Inputs, model_or_dir) -> dict:
    """Provenance recorded with outputs: package version, model, weights checksum, windows."""
    checksum, of = weights_checksum(run.model)
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    return {
        "version": __version__,
        "model": os.fspath(model_or_dir) if isinstance(model_or_dir, (str, os.PathLike))
        else None,
        "model_config": run.model.config.to_dict(),
        "labels": run.model.labels,
        "weights_sha256": checksum,
        "weights_checksum_of": of,
        **run.spec.to_dict(),
        "rc_average": opts.rc_average,
        "rc_equivariant": run.model.config.rc_equivariant,
        "precision": "bf16" if run.runner.bf16 else "fp32",
        **({"context_parallel": opts.context_parallel} if opts.context_parallel > 1 else {}),
        "inputs": [os.fspath(p) for p in paths],
        "source": "the input file each row was read from (one of inputs)",
        "regions": opts.read.to_dict()["region"],  # as asked (samtools' notation)
        "coordinates": "0-based, half-open, in the record's sequence (genome coordinates "
                       "for FASTA regions)",
    }
