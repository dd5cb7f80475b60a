"""Several devices: one torch.distributed process per rank, each writing one part of a pyarrow
dataset, then one merged output in the single-device order.

``run_on_devices`` spawns ``n`` workers (``torch.multiprocessing``), which join one process
group (NCCL on GPUs, gloo on CPUs: ``--device cpu --devices N`` runs N CPU processes, which is
how the path is tested without GPUs). Rank r of n takes the records whose ordinal (position
over all inputs, in input order) is r mod n, runs on ``cuda:r`` (or the CPU) and writes
``part-<r>.parquet`` with an extra ``record_index`` column into the dataset folder; the ranks
then gather their record counts, which must agree. The merge reads the parts side by side,
record ordinal by ordinal, so the final file has the single-device order (input order, then
start) without loading the parts into memory.

Context parallelism (``RunOptions.context_parallel`` = C > 1): the ranks form groups of C
consecutive ranks; a group takes the records of its replica (ordinal mod devices / C) and splits
every window along its length over its ranks (``mambadna.model.context_groups``). Every rank of
a group writes the same rows; the first rank's part is merged.

Faults: an error in one rank stops all of them within seconds (the parent terminates the
others as soon as one exits) and is raised in the parent as the same domain error (file,
record, fix), with nothing written under the output's name. The dataset folder is a hidden
temporary of ``mambadna.atomic`` beside the output, named after this process: it is removed
when the run ends, and if this process was killed (SIGKILL), by the next write into that
folder (``remove_stale``); workers die with the process that spawned them (Linux).

This module knows ranks, part files and merging, not what a rank computes: classify and embed
(``classify_on_devices``, ``embed_on_devices``) hand it a ``RankJob`` whose ``work`` is their own
per-rank function, so the pipelines import this module and never the other way round.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import mambadna.errors as domain_errors
from mambadna.atomic import remove_stale, signals_raise, temporary_name
from mambadna.errors import ConfigError, InputError, MambaDNAError
from mambadna.io import is_stdin
from mambadna.model import MambaDNA
from mambadna.pipelines.run import Inputs, RunOptions
from mambadna.pipelines.sources import RecordStream

INDEX = "record_index"
RANK_TIMEOUT = dt.timedelta(days=7)
"""How long the closing collective waits for the other ranks: ranks may finish hours apart
(one holds chr1, another chrY); a rank that fails or dies is caught by the parent instead,
which stops the others at once."""


def device_type_of(opts: RunOptions) -> str:
    """"cpu" for ``--device cpu --devices N`` (CPU processes, gloo), else "cuda"."""
    return "cpu" if opts.device == "cpu" else "cuda"


def check_devices(n: int, device_type: str = "cuda") -> None:
    """n CUDA devices must exist (device_type "cpu": n CPU processes, always possible)."""
    if device_type == "cuda":
        count = torch.cuda.device_count()
        if n > count:
            raise ConfigError(f"--devices {n} asks for {n} GPUs, but {count} CUDA device(s) "
                              f"are available", fix=f"use --devices {max(count, 1)} or fewer"
                              + ("" if count else " (or --device cpu --devices "
                                 f"{n} for {n} CPU processes)"))


def part_path(folder: Path, rank: int) -> Path:
    """The part file of ``rank`` in the dataset folder."""
    return folder / f"part-{rank:05d}.parquet"


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
    folder: Path
    """The dataset folder the ranks write their parts into."""
    n: int
    device_type: str = "cuda"
    kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments of ``work`` (pooling, per-window rows ...)."""

    @property
    def parts(self) -> list[Path]:
        return [part_path(self.folder, r) for r in range(self.n)]


class _Select:
    """Picklable ordinal filter: rank r of n takes ordinals i with i % n == r."""

    def __init__(self, rank: int, n: int) -> None:
        self.rank, self.n = rank, n

    def __call__(self, index: int) -> bool:
        return index % self.n == self.rank


def run_rank(rank: int, job: RankJob) -> int:
    """Rank ``rank``'s share of ``job``, written to its part file; returns the record count."""
    device = f"cuda:{rank}" if job.device_type == "cuda" else "cpu"
    opts = dataclasses.replace(job.options, devices=1, device=device,
                               progress=job.options.progress if rank == 0 else False)
    cp = job.options.context_parallel  # the ranks of one group share their replica's records
    return job.work(job.model, job.inputs, job.parts[rank], opts,
                    _Select(rank // cp, job.n // cp), **job.kwargs)


# ------------------------------------------------------------------------- the workers


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the one that spawned it dies (so a killed run
    leaves no worker behind writing into a folder the next run removes)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PDEATHSIG


def _error_file(folder: Path, rank: int) -> Path:
    return folder / f"error-{rank}.json"


def _worker(rank: int, job: RankJob, threads: int) -> None:
    """One spawned rank: join the process group, run its share, agree on the record count."""
    import torch.distributed as dist

    _die_with_parent()
    torch.set_num_threads(threads)
    if job.device_type == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if job.device_type == "cuda" else "gloo",
                            init_method=(job.folder / "rendezvous").as_uri(), rank=rank,
                            world_size=job.n, timeout=RANK_TIMEOUT)
    try:
        try:
            count = run_rank(rank, job)
        except MambaDNAError as err:  # ours: the parent raises it again, without a traceback
            fields = {k: getattr(err, k) for k in ("message", "path", "record", "line",
                                                   "position", "fix")}
            _error_file(job.folder, rank).write_text(json.dumps(
                {"type": type(err).__name__, **fields}))
            sys.exit(1)
        counts = [None] * job.n
        dist.all_gather_object(counts, count)
        if len(set(counts)) != 1:
            raise RuntimeError(f"the ranks counted different records: {counts}")
        if rank == 0:
            (job.folder / "ranks.json").write_text(json.dumps({"records": count,
                                                               "ranks": job.n}))
    finally:
        dist.destroy_process_group()


def _raise_rank_error(folder: Path, failure: BaseException) -> None:
    """Raise the domain error a rank reported (the first by rank), else ``failure``."""
    for path in sorted(folder.glob("error-*.json")):
        saved = json.loads(path.read_text())
        kind = getattr(domain_errors, saved.pop("type"), None)
        if not (isinstance(kind, type) and issubclass(kind, MambaDNAError)):
            kind = MambaDNAError
        message = saved.pop("message")
        raise kind(message, **saved) from None
    raise failure


def _spawn(job: RankJob) -> int:
    """Run every rank in its own spawned process; returns the record count of the inputs."""
    import torch.multiprocessing as mp

    threads = max(1, torch.get_num_threads() // job.n) if job.device_type == "cpu" else 1
    # torch logs each rank it terminates after another failed; the error itself is what to say
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    context = mp.start_processes(_worker, args=(job, threads), nprocs=job.n, join=False,
                                 start_method="spawn")
    try:
        while not context.join(timeout=0.2):  # a failed rank: join terminates the others
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as failure:
        _raise_rank_error(job.folder, failure)
    finally:
        for process in context.processes:  # on Ctrl-C or SIGTERM of this process, too
            if process.is_alive():
                process.terminate()
        for process in context.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
    return int(json.loads((job.folder / "ranks.json").read_text())["records"])


def run_ranks(job: RankJob, *, processes: bool = True) -> int:
    """All ranks of ``job`` -> the record count: spawned processes in one process group, or
    one after the other in this process (``processes=False``: a quick emulation of the same
    split and merge, for tests and debugging)."""
    if processes:
        return _spawn(job)
    if job.options.context_parallel > 1:
        raise ValueError("context-parallel ranks talk to each other: they need processes")
    counts = {run_rank(rank, job) for rank in range(job.n)}
    assert len(counts) == 1, counts
    return counts.pop()


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
    """The classify parts (one pyarrow dataset) in record order -> (frame with
    record_index, metadata)."""
    import pyarrow.dataset as ds

    table = ds.dataset([os.fspath(p) for p in parts], format="parquet").to_table()
    meta = json.loads(pq.read_schema(parts[0]).metadata[b"mambadna"])
    meta.update(devices=devices or len(parts))
    frame = table.to_pandas().sort_values(INDEX, kind="stable", ignore_index=True)
    if "start" in frame:  # a part without window rows reads back as float
        frame[["start", "end"]] = frame[["start", "end"]].astype("Int64")
    return frame, meta


@contextlib.contextmanager
def run_on_devices(work: RankWork, model_or_dir, inputs: Inputs, opts: RunOptions, beside: Path,
                   *, device_type: str | None = None, processes: bool = True,
                   **kwargs) -> Iterator[tuple[list[Path], int]]:
    """Run ``work`` on ``opts.devices`` ranks, each writing its part into a hidden dataset
    folder beside ``beside`` (the output).

    Yields (part files to merge, one per replica in rank order, and the records in the
    inputs) for the caller to merge; the folder is removed when the block ends (also on an
    error or an interrupt).
    """
    device_type = device_type or device_type_of(opts)
    check_devices(opts.devices, device_type)
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if any(is_stdin(p) for p in paths):
        raise ConfigError(f"--devices {opts.devices}: every rank reads the inputs, and the "
                          "standard input ('-') can be read only once",
                          fix="write the input to a file first, or use --devices 1")
    # the inputs' paths and indexes, once, before any rank starts (a stale index is refused,
    # or rebuilt here with --reindex rather than by every rank at once)
    RecordStream(paths, opts.read).close()
    beside = Path(beside)
    remove_stale(beside.parent)  # the dataset folders of killed runs (this host's only)
    folder = temporary_name(beside)
    # SIGTERM (a scheduler stopping the job) ends the ranks and removes the folder, as Ctrl-C
    with signals_raise(), saved_model(model_or_dir) as model_dir:
        folder.mkdir()
        try:
            job = RankJob(work, model_dir, [os.fspath(p) for p in paths], opts, folder,
                          opts.devices, device_type, kwargs)
            n_records = run_ranks(job, processes=processes)
            if n_records == 0:
                raise InputError("the inputs hold no records (after read filters and regions)",
                                 fix="check the inputs, --region and the read filters")
            yield job.parts[::opts.context_parallel], n_records
        finally:
            shutil.rmtree(folder, ignore_errors=True)
