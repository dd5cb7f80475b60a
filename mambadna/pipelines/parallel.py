"""Several GPUs: records split over ranks, one part file per rank, then one merged output.

Rank r of n takes the records whose ordinal (position over all inputs, in input order) is
r mod n, runs on ``cuda:r`` in its own process and writes ``<out stem>.part-<r>.parquet`` beside
the output, with an extra ``record_index`` column. The merge then reads the parts side by
side, record ordinal by ordinal, so the final file has the single-GPU order (input order, then
start) without loading the parts into memory. The parts are removed once the merge is done
(or the run failed).

Context parallelism (``RunOptions.context_parallel`` = C > 1): the ranks form groups of C
consecutive ranks in one process group (gloo on CPU, NCCL on GPUs); a group takes the records
of its replica (ordinal mod devices / C) and splits every window along its length over its
ranks. Every rank of a group writes the same rows; the first rank's part is merged.

This module knows ranks, part files and merging, not what a rank computes: classify and embed
(``classify_on_devices``, ``embed_on_devices``) hand it a ``RankJob`` whose ``work`` is their own
per-rank function, so the pipelines import this module and never the other way round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mambadna.errors import ConfigError, InputError
from mambadna.io import is_stdin
from mambadna.model import MambaDNA
from mambadna.pipelines.output import atomic_output
from mambadna.pipelines.run import Inputs, RunOptions

INDEX = "record_index"


def check_devices(n: int, device_type: str = "cuda") -> None:
    """n CUDA devices must exist (device_type "cpu" emulates ranks, for tests)."""
    if device_type == "cuda":
        count = torch.cuda.device_count()
        if n > count:
            raise ConfigError(f"--devices {n} asks for {n} GPUs, but {count} CUDA device(s) "
                              f"are available", fix=f"use --devices {max(count, 1)} or fewer"
                              + ("" if count else " (or run on a GPU machine)"))


def part_path(out: Path, rank: int) -> Path:
    """The part file of ``rank`` beside ``out``: ``<stem>.part-<rank>.parquet``."""
    return out.with_name(f"{out.stem}.part-{rank}.parquet")


RankWork = Callable[..., int]
"""``work(model_dir, inputs, part_path, options, select, **kwargs)`` -> records in the inputs:
one rank's share, written to ``part_path`` (a module-level function: ranks receive it pickled)."""


@dataclass
class RankJob:
    """Everything a rank needs (picklable: sent to each rank's process)."""

    work: RankWork
    model: str  # folder of a saved model
    inputs: list[str]
    options: RunOptions
    parts: list[Path]
    device_type: str = "cuda"
    kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments of ``work`` (pooling, per-window rows ...)."""
    init: str | None = None
    """File that starts the ranks' process group (context parallelism only)."""

    @property
    def n(self) -> int:
        return len(self.parts)


class _Select:
    """Picklable ordinal filter: rank r of n takes ordinals i with i % n == r."""

    def __init__(self, rank: int, n: int) -> None:
        self.rank, self.n = rank, n

    def __call__(self, index: int) -> bool:
        return index % self.n == self.rank


def _join_group(rank: int, job: RankJob) -> None:
    import torch.distributed as dist

    if job.device_type == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if job.device_type == "cuda" else "gloo",
                            init_method=f"file://{job.init}", rank=rank, world_size=job.n)


def run_rank(rank: int, job: RankJob) -> int:
    """Run rank ``rank`` of ``job`` and write its part file; returns the total record count."""
    device = f"cuda:{rank}" if job.device_type == "cuda" else "cpu"
    cp = job.options.context_parallel
    opts = dataclasses.replace(job.options, devices=1, device=device,
                               progress=job.options.progress if rank == 0 else False)
    if cp > 1:
        _join_group(rank, job)
    try:
        with atomic_output(job.parts[rank], force=True) as tmp:
            return job.work(job.model, job.inputs, tmp, opts, _Select(rank // cp, job.n // cp),
                            **job.kwargs)
    finally:
        if cp > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def run_ranks(job: RankJob, *, processes: bool | None = None) -> list[int]:
    """All ranks of ``job``: one process per rank (spawned; default on CUDA) or one after the
    other in this process (``processes=False``: how tests emulate ranks on a CPU)."""
    processes = job.device_type == "cuda" if processes is None else processes
    if job.options.context_parallel > 1 and not processes:
        raise ValueError("context-parallel ranks talk to each other: they need processes")
    if not processes:
        return [run_rank(rank, job) for rank in range(job.n)]
    context = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=job.n, mp_context=context) as pool:
        futures = [pool.submit(run_rank, rank, job) for rank in range(job.n)]
        return [future.result() for future in futures]


@contextlib.contextmanager
def saved_model(model_or_dir) -> Iterator[str]:
    """A folder holding the model: the given folder, or a temporary save of a MambaDNA."""
    if not isinstance(model_or_dir, MambaDNA):
        yield os.fspath(model_or_dir)
        return
    with tempfile.TemporaryDirectory(prefix="mambadna-model-") as folder:
        model_or_dir.save_pretrained(Path(folder) / "model")
        yield os.fspath(Path(folder) / "model")


# ------------------------------------------------------------------------------- merging


class _Cursor:
    """Reads one part file batch by batch; ``take(i)`` returns the rows of record ordinal i
    (the part is sorted by ordinal, and a record may span batches)."""

    def __init__(self, path: Path, batch_rows: int) -> None:
        self.batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        self.batch: pa.RecordBatch | None = None
        self.index = np.zeros(0, dtype=np.int64)
        self.pos = 0
        self._next()

    def _next(self) -> None:
        self.batch = next(self.batches, None)
        self.index = (self.batch.column(INDEX).to_numpy() if self.batch is not None
                      else np.zeros(0, dtype=np.int64))
        self.pos = 0

    def take(self, i: int) -> list[pa.RecordBatch]:
        out = []
        while self.batch is not None:
            end = int(np.searchsorted(self.index, i, side="right"))
            if end > self.pos:
                out.append(self.batch.slice(self.pos, end - self.pos))
                self.pos = end
            if self.pos < len(self.index):
                break
            self._next()
        return out


def merge_embeddings(parts: list[Path], path: Path, n_records: int,
                     row_group_size: int = 65_536, devices: int | None = None) -> int:
    """Merge part files into ``path`` in record order (streaming); returns the row count.
    devices: recorded in the metadata (default: one per part)."""
    schema = pq.read_schema(parts[0])
    meta = json.loads(schema.metadata[b"mambadna"])
    meta.update(devices=devices or len(parts))
    final = pa.schema([f for f in schema if f.name != INDEX],
                      metadata={b"mambadna": json.dumps(meta).encode()})
    cursors = [_Cursor(p, row_group_size) for p in parts]
    held: list[pa.RecordBatch] = []
    n_rows = 0
    with pq.ParquetWriter(path, final) as writer:
        for i in range(n_records):
            for batch in cursors[i % len(parts)].take(i):
                held.append(batch.select(final.names))
                n_rows += batch.num_rows
            if sum(b.num_rows for b in held) >= row_group_size or i == n_records - 1:
                if held:
                    writer.write_table(pa.Table.from_batches(held, final),
                                       row_group_size=row_group_size)
                held = []
    return n_rows


def merge_predictions(parts: list[Path], devices: int | None = None) -> tuple[object, dict]:
    """Concatenate classify parts in record order -> (frame with record_index, metadata)."""
    import pandas as pd

    frames = [pq.read_table(p).to_pandas() for p in parts]
    meta = json.loads(pq.read_schema(parts[0]).metadata[b"mambadna"])
    meta.update(devices=devices or len(parts))
    frame = pd.concat(frames, ignore_index=True).sort_values(INDEX, kind="stable",
                                                              ignore_index=True)
    if "start" in frame:  # a part without window rows reads back as float
        frame[["start", "end"]] = frame[["start", "end"]].astype("Int64")
    return frame, meta


def remove_parts(parts: list[Path]) -> None:
    """Delete the part files (those that exist)."""
    for part in parts:
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def run_on_devices(work: RankWork, model_or_dir, inputs: Inputs, opts: RunOptions, beside: Path,
                   *, device_type: str = "cuda", processes: bool | None = None,
                   **kwargs) -> Iterator[tuple[list[Path], int]]:
    """Run ``work`` on ``opts.devices`` ranks, each writing a part file beside ``beside``.

    Yields (part files to merge, one per replica in rank order, and the records in the
    inputs); the part files are removed when the block ends (also on an error).
    """
    check_devices(opts.devices, device_type)
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if any(is_stdin(p) for p in paths):
        raise ConfigError(f"--devices {opts.devices}: every rank reads the inputs, and the "
                          "standard input ('-') can be read only once",
                          fix="write the input to a file first, or use --devices 1")
    parts = [part_path(beside, r) for r in range(opts.devices)]
    with saved_model(model_or_dir) as model_dir, \
            tempfile.TemporaryDirectory(prefix="mambadna-group-") as group:
        try:
            job = RankJob(work, model_dir, [os.fspath(p) for p in paths], opts, parts,
                          device_type, kwargs, init=os.path.join(group, "init"))
            n_records = run_ranks(job, processes=processes)[0]
            if n_records == 0:
                raise InputError("the inputs hold no records (after read filters and regions)",
                                 fix="check the inputs, --region and the read filters")
            yield parts[::opts.context_parallel], n_records
        finally:
            remove_parts(parts)
