"""Genome embeddings: one pooled vector per window, written to Parquet as the run goes.

Schema (docs/architecture.md), one row per window, rows in input order then start::

    source: string, record_id: string, [region: string,] start: int64, end: int64,
    strand: string, n_fraction: float32, embedding: fixed_size_list<float32>[d_model]

``source`` is the input file (records of one name in two files stay apart). start/end are
0-based, half-open positions in the record's sequence; with regions a FASTA region's windows
are in genome coordinates (``record_id`` the sequence, ``region`` the region asked for, in
samtools' notation); BAM/CRAM reads keep positions in the read, ``region`` the region that
found the read.

File metadata key ``mambadna``: JSON with the package version, model config, labels, weights
sha256, pooling, window, stride, min_window, stream, strand handling and precision.

Which hidden states (``layers``): the output of one block (an index, 0 = the first block,
negative from the end; default -1, the last) or the mean of several (``"-1,-2"``), each
through the model's final RMSNorm, so layers are on one scale and the default is the model's
usual output. Averaging, not concatenating, keeps every file d_model wide whatever is chosen.

Pooling (``pool``) of a window's hidden states: "mean" over its non-N bases (over all its
bases if it holds only N), "max" elementwise over the same positions, "last" the state at its
last base (with ``stream``, that state has read the whole record up to the window's end),
"cls" the state at a CLS token appended after the window's last base. A causal model has no
use for a CLS token in front (nothing has been read there); after the window it reads the
whole window, like "last", but from a dedicated token. The shipped pretraining never shows
the model a CLS token, so "cls" is for models trained with one; otherwise prefer "last".
Strands: rows are "+" (the sequence as given); with ``rc_average`` each window's reverse
complement is embedded too and the two vectors are averaged, strand "."; an RC-equivariant
model (mambadna.model.strands) pools each strand and averages them itself, strand ".".
Rows are buffered into row groups of ``row_group_size`` rows (default: about 16 MiB of
embeddings), so memory stays flat however long the records are. Also as TSV (``.tsv``, or
``-`` for the standard output: the embedding spread over ``emb_0...`` columns) and the
windows' coordinates as BED6+ (``bed``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mambadna.alphabet import PAD, N
from mambadna.errors import ConfigError, InputError
from mambadna.io import ReadOptions
from mambadna.io.records import format_region
from mambadna.model import MambaDNA
from mambadna.model.strands import pool
from mambadna.pipelines.inference import Reducer, Rows
from mambadna.pipelines.output import (
    atomic_output,
    check_output,
    is_stdout,
    output_format,
    write_bed,
    write_output,
)
from mambadna.pipelines.parallel import merge_embeddings, run_on_devices
from mambadna.pipelines.run import Inputs, Run, RunOptions, open_run, run_metadata

POOLS = ("mean", "max", "last", "cls")
OUTPUT_FORMATS = {".parquet": "parquet", ".tsv": "tsv"}
METADATA_KEY = b"mambadna"
ROW_GROUP_BYTES = 16 << 20
WRITE_QUEUE = 8
"""Parts of rows waiting for the writer thread (beyond it the model waits)."""


def pooling(mode: str, model: MambaDNA | None = None) -> Reducer:
    """The reducer of ``mode`` (see the module docstring): hidden (b, L, hidden_size) ->
    (b, d_model) fp32; ``model`` pools both strands of an RC-equivariant model (default: one
    strand)."""
    if mode not in POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(POOLS)}, got {mode!r}")
    strands = 2 if model is not None and model.config.rc_equivariant else 1

    def reduce(hidden: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor):
        hidden = hidden.float()
        if mode in ("last", "cls"):  # cls: the hidden states run one longer, to the CLS token
            return pool(hidden, lengths + (mode == "cls"), "last", strands=strands)
        real = tokens != PAD  # (b, L)
        bases = real & (tokens != N)
        mask = torch.where(bases.any(1, keepdim=True), bases, real)  # all-N window: all bases
        return pool(hidden, lengths, mode, mask, strands=strands)

    return reduce


def parse_layers(layers: int | str | Sequence[int] | None) -> list[int] | None:
    """``-1``, ``"-1"``, ``"-1,-2"`` or ``[-1, -2]`` -> a list of block indices (None: the
    last block). Checked against the model by ``MambaDNA.resolve_layers``."""
    if layers is None:
        return None
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        return [int(layers)]
    if isinstance(layers, str):
        try:
            return [int(part) for part in layers.split(",")]
        except ValueError:
            raise ConfigError(f"--layer must be block indices separated by commas, such as -1 "
                              f"or -1,-2; got {layers!r}") from None
    return list(layers)


def embedding_schema(d_model: int, metadata: dict | None = None, *,
                     record_index: bool = False, region: bool = False) -> pa.Schema:
    """The embeddings Parquet schema; ``record_index`` adds the ordinal column of part files,
    ``region`` the region column (runs with regions)."""
    fields = [("source", pa.string()), ("record_id", pa.string()),
              *([("region", pa.string())] if region else []),
              ("start", pa.int64()), ("end", pa.int64()),
              ("strand", pa.string()), ("n_fraction", pa.float32()),
              ("embedding", pa.list_(pa.float32(), d_model))]
    if record_index:
        fields.append(("record_index", pa.int64()))
    meta = {METADATA_KEY: json.dumps(metadata).encode()} if metadata is not None else None
    return pa.schema(fields, metadata=meta)


def rows_table(rows: Rows, schema: pa.Schema, strand: str) -> pa.Table:
    """A pyarrow table of ``rows`` in ``schema`` (values are the embeddings)."""
    d_model = schema.field("embedding").type.list_size
    flat = pa.array(np.ascontiguousarray(rows.values, dtype=np.float32).reshape(-1))
    columns = [pa.array(rows.sources, pa.string()), pa.array(rows.records, pa.string()),
               *([pa.array(rows.regions, pa.string())] if "region" in schema.names else []),
               pa.array(rows.start, pa.int64()),
               pa.array(rows.end, pa.int64()), pa.array([strand] * len(rows), pa.string()),
               pa.array(rows.n_fraction, pa.float32()),
               pa.FixedSizeListArray.from_arrays(flat, d_model)]
    if "record_index" in schema.names:
        columns.append(pa.array(rows.record_index, pa.int64()))
    return pa.Table.from_arrays(columns, schema=schema)


class RowGroupWriter:
    """Appends Rows to a Parquet file in row groups of ``row_group_size`` rows, on a writer
    thread (Arrow conversion and compression overlap the model); its errors (a full disk)
    are raised by the next ``write`` or by ``close``."""

    def __init__(self, path: Path, schema: pa.Schema, strand: str, row_group_size: int) -> None:
        self.writer = pq.ParquetWriter(path, schema)
        self.schema, self.strand, self.size = schema, strand, row_group_size
        self.pending: list[Rows] = []
        self.held = 0
        self.n_rows = 0
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self.thread = threading.Thread(target=self._work, name="mambadna-writer", daemon=True)
        self.thread.start()

    def write(self, rows: Rows) -> None:
        self._raise()
        self.queue.put(rows)

    def close(self) -> None:
        """Write what is left and close the file (also after an error: the file is closed)."""
        self.queue.put(None)
        self.thread.join()
        self.writer.close()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _work(self) -> None:
        while True:
            rows = self.queue.get()
            if rows is None and self.error is not None:
                return
            if self.error is not None:  # after an error: drain until close
                continue
            try:
                if rows is None:
                    if self.pending:
                        self._flush(Rows.concat(self.pending))
                        self.pending, self.held = [], 0
                else:
                    self._add(rows)
            except BaseException as err:  # raised in the caller's thread
                self.error = err
            if rows is None:
                return

    def _add(self, rows: Rows) -> None:
        self.pending.append(rows)
        self.held += len(rows)
        if len(self.pending) >= 16:  # many small parts cost more than their rows: join them
            self.pending = [Rows.concat(self.pending)]
        while self.held >= self.size:
            joined = Rows.concat(self.pending)
            self._flush(joined.take(slice(0, self.size)))
            rest = joined.take(slice(self.size, None))
            self.pending, self.held = ([rest] if len(rest) else []), len(rest)

    def _flush(self, rows: Rows) -> None:
        self.writer.write_table(rows_table(rows, self.schema, self.strand),
                                row_group_size=len(rows))
        self.n_rows += len(rows)


@dataclass
class EmbedResult:
    """What an embedding run did: output path (or table), counts and wall time."""

    out: Path | None
    table: pd.DataFrame | None
    n_records: int
    n_windows: int
    bases: int
    seconds: float
    n_input_records: int = 0
    """Records in the inputs, including those a rank of a multi-GPU run left to others."""

    @property
    def bases_per_second(self) -> float:
        return self.bases / self.seconds if self.seconds > 0 else float("nan")


def _strand(run: Run, opts: RunOptions) -> tuple[str, str]:
    """(strand column, how strands were handled) of a run."""
    if run.model.config.rc_equivariant:
        return ".", "RC-equivariant model: both strands pooled and averaged by the model"
    if opts.rc_average:
        return ".", "mean of both strands"
    return "+", "forward strand"


POSITIONS = {"last": "last base", "cls": "a CLS token appended after the last base",
             "mean": "non-N bases (all bases if the window is all N)",
             "max": "non-N bases (all bases if the window is all N)"}


def _metadata(run: Run, opts: RunOptions, inputs: Inputs, model_or_dir, pool: str,
              layers: list[int] | None) -> dict:
    strand, handling = _strand(run, opts)
    return {**run_metadata(run, opts, inputs, model_or_dir), "pooling": pool,
            "pooling_positions": POSITIONS[pool],
            "layers": run.model.resolve_layers(layers),
            "layers_combined": "mean of the blocks' outputs, each through the final RMSNorm",
            "strand": strand, "strand_handling": handling,
            "n_fraction": "share of N among the window's bases"}


def _check_found(run: Run, n_windows: int, ranked: bool) -> None:
    if run.records.n_records == 0:
        raise InputError("the inputs hold no records (after read filters and regions)",
                         fix="check the inputs, --region and the read filters")
    if n_windows == 0 and not ranked:
        longest = max((record.length for record, _ in run.seen), default=0)
        raise InputError(f"no record is long enough for one window: the longest has {longest}"
                         f" bases, a window needs at least {run.spec.min_window} (--min-window)",
                         fix="lower --window and/or --min-window")


def embed_to_file(model_or_dir, inputs: Inputs, path: Path, opts: RunOptions, *,
                  pool: str = "mean", layers=None, row_group_size: int | None = None,
                  select=None, device=None, record_index: bool = False) -> EmbedResult:
    """Embed into the (temporary) Parquet file ``path``; ``select``/``record_index`` serve
    the ranks of a multi-GPU run (see mambadna.pipelines.parallel)."""
    started = time.perf_counter()
    layers = parse_layers(layers)

    def hidden_options(model: MambaDNA) -> dict:
        return {"layers": model.resolve_layers(layers), "append_cls": pool == "cls"}

    run = open_run(model_or_dir, inputs, opts, lambda model: pooling(pool, model), "embed",
                   select=select, device=device, hidden_options=hidden_options)
    d_model = run.model.config.d_model
    schema = embedding_schema(d_model, _metadata(run, opts, inputs, model_or_dir, pool, layers),
                              record_index=record_index, region=bool(opts.read.region))
    size = row_group_size or max(256, ROW_GROUP_BYTES // (4 * d_model))
    writer = RowGroupWriter(path, schema, _strand(run, opts)[0], size)
    bases = 0
    try:
        try:
            for rows in run.runner.run(run.records):
                writer.write(rows)
                bases += int((rows.end - rows.start).sum())
        finally:
            writer.close()
    finally:
        run.records.close()
        run.progress.close()
    _check_found(run, writer.n_rows, ranked=select is not None)
    return EmbedResult(path, None, len(run.seen), writer.n_rows, bases,
                       time.perf_counter() - started, run.records.n_records)


def embed_rank(model_dir: str, inputs: Inputs, path: Path, opts: RunOptions, select, *,
               pool: str, row_group_size: int | None, layers=None) -> int:
    """One rank of a multi-GPU run (parallel.RankWork): its records' rows, with
    ``record_index``, as Parquet at ``path``."""
    return embed_to_file(model_dir, inputs, path, opts, pool=pool, layers=layers,
                         select=select, row_group_size=row_group_size,
                         record_index=True).n_input_records


def embed_on_devices(model_or_dir, inputs: Inputs, out, opts: RunOptions, *, pool: str,
                     force: bool, row_group_size: int | None, device_type: str | None = None,
                     processes: bool = True, layers=None) -> EmbedResult:
    """``embed`` over ``opts.devices`` ranks (see mambadna.pipelines.parallel)."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if out is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mambadna-")))
            target = folder / "embeddings.parquet"
        else:
            target = check_output(out, force=force)
        parts, n_records = stack.enter_context(run_on_devices(
            embed_rank, model_or_dir, inputs, opts, target, device_type=device_type,
            processes=processes, pool=pool, row_group_size=row_group_size, layers=layers))
        with atomic_output(target, force=force or out is None) as tmp:
            n_rows = merge_embeddings(parts, tmp, n_records, devices=opts.devices)
            if n_rows == 0:
                raise InputError("no record is long enough for one window",
                                 fix="lower --window and/or --min-window")
        table = read_embeddings(target) if out is None else None
        bases = int(pq.read_table(target, columns=["start", "end"]).to_pandas()
                    .eval("end - start").sum()) if out is not None else 0
        return EmbedResult(None if out is None else target, table, n_records, n_rows, bases,
                           time.perf_counter() - started, n_records)


def embed_run(model_or_dir, inputs: Inputs, out: str | os.PathLike | None = None, *,
              pool: str = "mean", layers=None, force: bool = False,
              row_group_size: int | None = None, options: RunOptions | None = None,
              bed: str | os.PathLike | None = None) -> EmbedResult:
    """``embed`` returning an EmbedResult (counts and timing, for the CLI and benchmarks).

    out: .parquet, .tsv (one column per dimension), ``-`` (that TSV on the standard output) or
    None (a DataFrame); bed: also write the windows' coordinates as BED6+ (``bed_frame``)."""
    opts = options or RunOptions()
    pooling(pool)  # validate before any work
    layers = parse_layers(layers)
    if pool == "cls" and opts.stream:
        raise ConfigError("--pool cls appends a CLS token after each window, which a carried "
                          "state cannot hold", fix="use --pool last with --stream")
    fmt = None if out is None else output_format(out, OUTPUT_FORMATS)
    if out is not None and bed is not None and is_stdout(out) and is_stdout(bed):
        raise ConfigError("the embeddings and the BED file cannot both go to the standard "
                          "output", fix="give one of -o and --bed a file name")
    for target in (out, bed):
        if target is not None and not is_stdout(target):
            check_output(target, force=force)
    if fmt == "parquet" or (out is None and bed is None):
        result = _embed_parquet(model_or_dir, inputs, out, opts, pool=pool, layers=layers,
                                force=force, row_group_size=row_group_size)
        if bed is not None:
            write_output(bed, force, lambda target: write_bed_embeddings(result.out, target))
        return result
    with tempfile.TemporaryDirectory(prefix="mambadna-embed-") as folder:
        parquet = Path(folder) / "embeddings.parquet"
        result = _embed_parquet(model_or_dir, inputs, parquet, opts, pool=pool, layers=layers,
                                force=True, row_group_size=row_group_size)
        if bed is not None:
            write_output(bed, force, lambda target: write_bed_embeddings(parquet, target))
        if out is None:
            result.table, result.out = read_embeddings(parquet), None
        else:
            write_output(out, force, lambda target: write_embeddings_tsv(parquet, target))
            result.out = Path(out)
    return result


def _embed_parquet(model_or_dir, inputs: Inputs, out, opts: RunOptions, *, pool: str,
                   layers, force: bool, row_group_size: int | None) -> EmbedResult:
    """Embeddings into the Parquet file ``out`` (or a DataFrame when None)."""
    if opts.devices > 1:
        return embed_on_devices(model_or_dir, inputs, out, opts, pool=pool, force=force,
                                row_group_size=row_group_size, layers=layers)
    if out is None:
        return _embed_to_frame(model_or_dir, inputs, opts, pool, layers)
    with atomic_output(out, force=force) as tmp:
        result = embed_to_file(model_or_dir, inputs, tmp, opts, pool=pool, layers=layers,
                               row_group_size=row_group_size)
    result.out = Path(out)
    return result


def _embed_to_frame(model_or_dir, inputs: Inputs, opts: RunOptions, pool: str,
                    layers) -> EmbedResult:
    # Through a temporary Parquet file: one code path, and the frame carries the same
    # metadata (DataFrame.attrs["mambadna"]) as the file would.
    with tempfile.TemporaryDirectory(prefix="mambadna-embed-") as folder:
        result = embed_to_file(model_or_dir, inputs, Path(folder) / "embeddings.parquet", opts,
                               pool=pool, layers=layers)
        result.table = read_embeddings(result.out)
    result.out = None
    return result


def _batches(path: Path, columns: list[str] | None = None):
    """The rows of an embeddings file as DataFrames, a row group's worth at a time."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=columns):
        yield batch.to_pandas()


def write_embeddings_tsv(parquet: Path, target) -> None:
    """An embeddings Parquet file as TSV at ``target`` (a path or ``-``): its columns, with the
    embedding spread over ``emb_0 ... emb_<d-1>``; streamed, a row group at a time."""
    stream = sys.stdout if is_stdout(target) else open(target, "w", encoding="utf-8")
    try:
        for i, frame in enumerate(_batches(parquet)):
            vectors = np.stack(frame.pop("embedding").to_numpy()) if len(frame) else None
            if vectors is not None:
                frame = pd.concat([frame, pd.DataFrame(
                    vectors, columns=[f"emb_{k}" for k in range(vectors.shape[1])])], axis=1)
            frame.to_csv(stream, sep="\t", index=False, header=i == 0, na_rep="",
                         float_format="%.6g")
        stream.flush()
    finally:
        if stream is not sys.stdout:
            stream.close()


def bed_frame(frame: pd.DataFrame, first_row: int = 0) -> pd.DataFrame:
    """Embedding rows' coordinates as BED6+ columns: chrom (record_id), start, end, name (the
    window in samtools' notation), score 0, strand (+, or . for both strands averaged), then
    row (the row of the embeddings file, from 0, to join back), n_fraction, source [region]."""
    bed = pd.DataFrame({
        "chrom": frame["record_id"], "start": frame["start"], "end": frame["end"],
        "name": [format_region(*w) for w in zip(frame["record_id"], frame["start"],
                                                 frame["end"])],
        "score": 0, "strand": frame["strand"],
        "row": np.arange(first_row, first_row + len(frame), dtype=np.int64),
        "n_fraction": frame["n_fraction"], "source": frame["source"]})
    if "region" in frame:
        bed["region"] = frame["region"].to_numpy()
    return bed


def write_bed_embeddings(parquet: Path, target) -> None:
    """The windows of an embeddings Parquet file as BED6+ (``bed_frame``) at ``target``."""
    names = [n for n in pq.read_schema(parquet).names if n != "embedding"]
    frames, first = [], 0
    for frame in _batches(parquet, names):
        frames.append(bed_frame(frame, first))
        first += len(frame)
    bed = pd.concat(frames, ignore_index=True) if frames else bed_frame(
        pd.DataFrame({n: [] for n in names}))
    write_bed(bed, target, track="mambadna embed",
              description="embedded windows; row = row of the embeddings file")


def read_embeddings(path: str | os.PathLike) -> pd.DataFrame:
    """An embeddings Parquet file as a DataFrame (``embedding``: float32 arrays), with the
    file's metadata as ``frame.attrs["mambadna"]``."""
    table = pq.read_table(path)
    frame = table.to_pandas()
    meta = (table.schema.metadata or {}).get(METADATA_KEY)
    if meta is not None:
        frame.attrs["mambadna"] = json.loads(meta)
    return frame


def embed(model_or_dir: MambaDNA | str | os.PathLike, inputs: Inputs,
          out: str | os.PathLike | None = None, *, window: int | None = None,
          stride: int | None = None, min_window: int | None = None, pool: str = "mean",
          layers: int | str | Sequence[int] | None = None, batch_size: int = 8,
          rc_average: bool = False, stream: bool = False,
          device: str | None = None, devices: int = 1, precision: str = "auto",
          force: bool = False, progress: bool | None = None,
          row_group_size: int | None = None, bed: str | os.PathLike | None = None,
          read: ReadOptions | None = None, context_parallel: int = 1,
          **read_opts) -> pd.DataFrame | Path:
    """Embed every window of every record of ``inputs`` (FASTA/FASTQ/SAM/BAM/CRAM).

    model_or_dir: a MambaDNA or the folder of a saved model. out: a .parquet path (written
    atomically; .tsv or ``-`` for TSV, one column per dimension), or None to get a DataFrame.
    bed: also write the windows' coordinates as BED6+ (``bed_frame``). Windows, layers, pooling,
    strands and streaming are described in the module docstring and ``RunOptions``. read: how
    the inputs are read (mambadna.io.ReadOptions); read_opts: its fields as keywords
    (on_invalid, on_unknown, fmt, region, reference, flags, allow_duplicates). Returns the
    DataFrame (columns as in the file; ``attrs["mambadna"]`` holds the metadata) or the output
    Path.

    Example::

        import mambadna as md
        md.embed("run/model", ["genome.fa"], "genome.parquet", window=16_384, pool="mean")
        frame = md.embed("run/model", "reads.bam", window=150)   # a pandas DataFrame
    """
    opts = RunOptions(window=window, stride=stride, min_window=min_window,
                      batch_size=batch_size, rc_average=rc_average, stream=stream,
                      device=device, devices=devices, precision=precision, progress=progress,
                      context_parallel=context_parallel, read=ReadOptions.of(read, **read_opts))
    result = embed_run(model_or_dir, inputs, out, pool=pool, layers=layers, force=force,
                       row_group_size=row_group_size, options=opts, bed=bed)
    return result.table if out is None else result.out
