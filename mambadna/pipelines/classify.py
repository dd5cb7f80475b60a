"""Species (or any label) classification of records, window by window, with a per-record call.

Each window gets class log-probabilities from the model's classification head (its pooling:
last or mean position, from the model config). Per record, the windows' log-probabilities are
averaged and softmax-normalised again: the record's probabilities are the normalised geometric
mean of its windows' probabilities, so every window votes with its full distribution. With
``rc_average`` the two strands of every window are averaged the same way (mean log-probability).

Output columns (docs/architecture.md): ``source, record_id, predicted_label, probability,
n_windows, prob_<label>...``, one row per record in input order; ``source`` is the input file,
so records of the same name in two files stay apart. ``per_window`` adds ``start, end`` and one
row per window (n_windows 1) after its record's row, whose start and end stay empty. Window
coordinates are 0-based, half-open positions in the record's sequence: with regions
(``region="chr1:1001-2000"``) a FASTA region's windows are reported in genome coordinates
(``record_id`` chr1, the first window starting at 1000), and a ``region`` column (after
``record_id``) names the region asked for (for BAM/CRAM reads: the region that found the read;
their windows stay positions in the read as sequenced). A record
with no window (shorter than ``min_window``) gets n_windows 0 and empty predictions, and a
warning says how many records that was. Formats by extension: .tsv, .csv, .parquet (the
Parquet file also carries the ``mambadna`` metadata that embeddings have); ``-`` writes TSV to
the standard output. ``bed`` writes the window predictions as BED6+ (``bed_frame``) for
bedtools and genome browsers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mambadna.errors import ConfigError, InputError
from mambadna.io import ReadOptions
from mambadna.model import MambaDNA
from mambadna.pipelines.inference import Reducer, Rows
from mambadna.pipelines.output import (
    TABLE_FORMATS,
    check_output,
    is_stdout,
    output_format,
    write_bed,
    write_output,
)
from mambadna.pipelines.parallel import merge_predictions, run_on_devices
from mambadna.pipelines.run import Inputs, Run, RunOptions, open_run, run_metadata

_log = logging.getLogger(__name__)


def class_log_probs(model: MambaDNA) -> Reducer:
    """hidden (b, L, d) -> log-probabilities (b, num_labels) fp32 of the model's head."""

    def reduce(hidden: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor):
        logits = model.classifier(model.pool(hidden.float(), lengths)).float()
        return torch.log_softmax(logits, dim=-1)

    return reduce


def check_classifier(model: MambaDNA) -> None:
    if model.config.num_labels < 2 or model.classifier is None:
        raise ConfigError("this model has no classification head (num_labels = 0): it is a "
                          "pretrained language model",
                          fix="finetune it on labelled sequences (mambadna finetune --from "
                              "MODEL_DIR), or use `mambadna embed` for embeddings")


def _labels(model: MambaDNA) -> list[str]:
    return list(model.labels or [f"class{i}" for i in range(model.config.num_labels)])


def _softmax(log_probs: np.ndarray) -> np.ndarray:
    shifted = log_probs - log_probs.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    return probs / probs.sum(axis=-1, keepdims=True)


def _prediction_columns(probs: np.ndarray, labels: list[str], known: np.ndarray) -> dict:
    """predicted_label, probability and prob_<label> columns; rows not ``known`` stay empty."""
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    names = np.array(labels, dtype=object)[best] if len(probs) else np.array([], dtype=object)
    columns = {"predicted_label": np.where(known, names, None),
               "probability": np.where(known, probs.max(axis=1, initial=0.0), np.nan)}
    for i, label in enumerate(labels):
        columns[f"prob_{label}"] = np.where(known, probs[:, i], np.nan)
    return columns


def _names(sources: list[str], records: list[str], regions: list | None) -> dict:
    """The source, record_id [and region] columns (region only when regions were asked)."""
    columns = {"source": sources, "record_id": records}
    if regions is not None:
        columns["region"] = regions
    return columns


def record_frame(run: Run, sums: dict[int, np.ndarray], labels: list[str], *,
                 with_region: bool = False) -> pd.DataFrame:
    """One row per record reached (input order) from summed window log-probabilities."""
    index = np.array([record.index for record, _ in run.seen], dtype=np.int64)
    counts = np.array([n for _, n in run.seen], dtype=np.int64)
    mean = np.zeros((len(index), len(labels)))
    for row, i in enumerate(index.tolist()):
        if counts[row]:
            mean[row] = sums[i] / counts[row]
    records = [record for record, _ in run.seen]
    frame = pd.DataFrame({"record_index": index, **_names(
        [r.source for r in records], [r.name for r in records],
        [r.region for r in records] if with_region else None)})
    frame = frame.assign(**_prediction_columns(_softmax(mean), labels, counts > 0))
    frame.insert(frame.columns.get_loc("probability") + 1, "n_windows", counts)
    return frame


def window_frame(rows: Rows, labels: list[str], *, with_region: bool = False) -> pd.DataFrame:
    """One row per window (n_windows 1) from per-window log-probabilities."""
    frame = pd.DataFrame({"record_index": rows.record_index,
                          **_names(rows.sources, rows.records,
                                   rows.regions if with_region else None),
                          "start": rows.start, "end": rows.end})
    frame = frame.assign(**_prediction_columns(_softmax(rows.values.astype(np.float64)),
                                               labels, np.ones(len(rows), dtype=bool)))
    frame.insert(frame.columns.get_loc("probability") + 1, "n_windows", 1)
    return frame


def interleave(records: pd.DataFrame, windows: pd.DataFrame | None) -> pd.DataFrame:
    """Record rows (start/end empty) each followed by its window rows; keeps record_index."""
    if windows is None:
        return records
    records = records.assign(start=pd.NA, end=pd.NA, _order=0)
    windows = windows.assign(_order=1)
    frame = pd.concat([records, windows[records.columns]], ignore_index=True)
    frame = frame.sort_values(["record_index", "_order"], kind="stable", ignore_index=True)
    frame[["start", "end"]] = frame[["start", "end"]].astype("Int64")
    columns = ["record_index", *(c for c in ("source", "record_id", "region") if c in frame),
               "start", "end"]
    return frame[columns + [c for c in records.columns if c not in [*columns, "_order"]]]


def _warn_empty(frame: pd.DataFrame, spec_min: int) -> None:
    empty = frame[frame["n_windows"] == 0]  # window rows have n_windows 1
    if len(empty):
        n_records = int(frame["start"].isna().sum()) if "start" in frame else len(frame)
        _log.warning("%d of %d records are shorter than --min-window (%d bases): n_windows = "
                     "0 and no prediction (e.g. %r); lower --window/--min-window to classify "
                     "them", len(empty), n_records, spec_min, empty["record_id"].iloc[0])


@dataclass
class ClassifyResult:
    """Predictions (with ``record_index``, the input ordinal), metadata and timing."""

    frame: pd.DataFrame
    metadata: dict
    out: Path | None
    n_windows: int
    bases: int
    seconds: float
    n_input_records: int = 0
    """Records in the inputs, including those a rank of a multi-GPU run left to others."""


def classify_records(model_or_dir, inputs: Inputs, opts: RunOptions, *,
                     per_window: bool = False, select=None, device=None) -> ClassifyResult:
    """Run the classifier; the frame keeps ``record_index`` (used to merge ranks)."""
    started = time.perf_counter()
    run = open_run(model_or_dir, inputs, opts, class_log_probs, "classify", select=select,
                   device=device, check_model=check_classifier)
    labels = _labels(run.model)
    sums: dict[int, np.ndarray] = {}
    windows: list[Rows] = []
    n_windows = bases = 0
    try:
        for rows in run.runner.run(run.records):
            for i, value in zip(rows.record_index.tolist(), rows.values.astype(np.float64)):
                sums[i] = sums.get(i, 0.0) + value
            if per_window:
                windows.append(rows)
            n_windows += len(rows)
            bases += int((rows.end - rows.start).sum())
    finally:
        run.records.close()
        run.progress.close()
    if run.records.n_records == 0:
        raise InputError("the inputs hold no records (after read filters and regions)",
                         fix="check the inputs, --region and the read filters")
    window_rows = None
    with_region = bool(opts.read.region)
    if per_window:
        window_rows = window_frame(Rows.concat(windows) if windows
                                   else Rows.empty(len(labels)), labels,
                                   with_region=with_region)
    frame = interleave(record_frame(run, sums, labels, with_region=with_region), window_rows)
    metadata = {**run_metadata(run, opts, inputs, model_or_dir), "per_window": per_window,
                "aggregation": "softmax of the mean of window log-probabilities",
                "strand_handling": "mean log-probability of both strands" if opts.rc_average
                else "forward strand"}
    return ClassifyResult(frame, metadata, None, n_windows, bases,
                          time.perf_counter() - started, run.records.n_records)


def write_predictions(frame: pd.DataFrame, path: Path, fmt: str, metadata: dict) -> None:
    """Write predictions (without record_index) as tsv, csv or parquet to ``path``."""
    frame = frame.drop(columns="record_index", errors="ignore")
    if is_stdout(path):
        frame.to_csv(sys.stdout, sep="\t", index=False, na_rep="", float_format="%.6g")
        sys.stdout.flush()
    elif fmt == "parquet":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = {**(table.schema.metadata or {}), b"mambadna": json.dumps(metadata).encode()}
        pq.write_table(table.replace_schema_metadata(meta), path)
    else:
        frame.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False, na_rep="",
                     float_format="%.6g")


def bed_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The window rows of a predictions frame as BED6+ columns: chrom (record_id), start, end,
    name (predicted label), score (1000 x its probability, as integer 0-1000), strand ("."),
    then probability, prob_<label>..., source [and region]."""
    windows = frame[frame["start"].notna()]
    probs = [c for c in windows.columns if c.startswith("prob_")]
    bed = pd.DataFrame({
        "chrom": windows["record_id"], "start": windows["start"].astype("int64"),
        "end": windows["end"].astype("int64"), "name": windows["predicted_label"],
        "score": (windows["probability"] * 1000).round().astype("int64"), "strand": ".",
        "probability": windows["probability"]})
    bed = pd.concat([bed, windows[probs + [c for c in ("source", "region")
                                           if c in windows]]], axis=1)
    return bed.reset_index(drop=True)


def write_bed_predictions(frame: pd.DataFrame, path, metadata: dict) -> None:
    """Per-window predictions as BED (``bed_frame``) at ``path`` (a file or ``-``)."""
    strand = "both strands averaged" if metadata.get("rc_average") else "forward strand"
    write_bed(bed_frame(frame), path, track="mambadna classify",
              description=f"predicted label per window ({strand}); score = 1000 x probability",
              use_score=True)


RANK_BASES = b"mambadna_rank_bases"
"""Part-file metadata key: the bases a rank classified (summed for the run's summary)."""


def classify_rank(model_dir: str, inputs: Inputs, path: Path, opts: RunOptions, select, *,
                  per_window: bool) -> int:
    """One rank of a multi-GPU run (parallel.RankWork): its records' predictions, with
    ``record_index`` and the metadata, as Parquet at ``path``."""
    result = classify_records(model_dir, inputs, opts, per_window=per_window, select=select)
    table = pa.Table.from_pandas(result.frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(
        {b"mambadna": json.dumps(result.metadata).encode(),
         RANK_BASES: str(result.bases).encode()}), path)
    return result.n_input_records


def classify_on_devices(model_or_dir, inputs: Inputs, opts: RunOptions, *, per_window: bool,
                        device_type: str | None = None,
                        processes: bool = True) -> ClassifyResult:
    """``classify`` over ``opts.devices`` ranks -> ClassifyResult (frame with record_index)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mambadna-") as folder, \
            run_on_devices(classify_rank, model_or_dir, inputs, opts,
                           Path(folder) / "predictions.parquet", device_type=device_type,
                           processes=processes, per_window=per_window) as (parts, n_records):
        frame, meta = merge_predictions(parts, devices=opts.devices)
        bases = sum(int(pq.read_schema(p).metadata.get(RANK_BASES, b"0")) for p in parts)
    record_rows = frame[frame["start"].isna()] if "start" in frame else frame
    n_windows = int(record_rows["n_windows"].sum())
    return ClassifyResult(frame, meta, None, n_windows, bases, time.perf_counter() - started,
                          n_records)


def classify_run(model_or_dir, inputs: Inputs, out: str | os.PathLike | None = None, *,
                 per_window: bool = False, force: bool = False,
                 options: RunOptions | None = None,
                 bed: str | os.PathLike | None = None) -> ClassifyResult:
    """``classify`` returning a ClassifyResult (for the CLI: counts and timing).

    out / bed: a path, or ``-`` for the standard output (the table as TSV); ``bed`` also writes
    the per-window predictions as BED6+ (``bed_frame``), whether or not the table has them."""
    opts = options or RunOptions()
    fmt = None
    if out is not None and bed is not None and is_stdout(out) and is_stdout(bed):
        raise ConfigError("the table and the BED file cannot both go to the standard output",
                          fix="give one of -o and --bed a file name")
    for target in (out, bed):
        if target is not None and not is_stdout(target):
            check_output(target, force=force)
    if out is not None:
        fmt = output_format(out, TABLE_FORMATS)
    windows = per_window or bed is not None
    if opts.devices > 1:
        result = classify_on_devices(model_or_dir, inputs, opts, per_window=windows)
    else:
        result = classify_records(model_or_dir, inputs, opts, per_window=windows)
    result.frame = result.frame.drop(columns="record_index")
    _warn_empty(result.frame, opts.min_window or result.metadata["min_window"])
    if bed is not None:
        write_output(bed, force, lambda target: write_bed_predictions(
            result.frame, target, result.metadata))
    if windows and not per_window:  # the window rows were for the BED file only
        result.frame = result.frame[result.frame["start"].isna()].drop(
            columns=["start", "end"]).reset_index(drop=True)
        result.metadata["per_window"] = False
    if out is not None:
        write_output(out, force, lambda target: write_predictions(
            result.frame, target, fmt, result.metadata))
        result.out = Path(out)
    result.frame.attrs["mambadna"] = result.metadata
    return result


def classify(model_or_dir: MambaDNA | str | os.PathLike, inputs: Inputs, *,
             window: int | None = None, stride: int | None = None,
             min_window: int | None = None, batch_size: int = 8, rc_average: bool = False,
             per_window: bool = False, stream: bool = False, device: str | None = None,
             devices: int = 1, precision: str = "auto", out: str | os.PathLike | None = None,
             force: bool = False, progress: bool | None = None,
             bed: str | os.PathLike | None = None,
             read: ReadOptions | None = None, context_parallel: int = 1,
             **read_opts) -> pd.DataFrame:
    """Predict the label of every record of ``inputs`` (FASTA/FASTQ/SAM/BAM/CRAM).

    model_or_dir: a classifier (MambaDNA with num_labels >= 2) or its saved folder. Windows,
    strands and streaming as in ``RunOptions``; aggregation and columns in the module
    docstring. out: also write the table (.tsv, .csv or .parquet, atomically; ``-``: TSV on
    the standard output). bed: also write the per-window predictions as BED6+. read: how the
    inputs are read (mambadna.io.ReadOptions); read_opts: its fields as keywords (on_invalid,
    on_unknown, fmt, region, reference, flags, allow_duplicates). Returns the predictions
    DataFrame (``attrs["mambadna"]``: metadata).

    Example::

        import mambadna as md
        table = md.classify("run/model", ["sample.fa"], window=1024)
        table[["record_id", "predicted_label", "probability"]]
    """
    opts = RunOptions(window=window, stride=stride, min_window=min_window,
                      batch_size=batch_size, rc_average=rc_average, stream=stream,
                      device=device, devices=devices, precision=precision, progress=progress,
                      context_parallel=context_parallel, read=ReadOptions.of(read, **read_opts))
    return classify_run(model_or_dir, inputs, out, per_window=per_window, force=force,
                        options=opts, bed=bed).frame
