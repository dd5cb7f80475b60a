"""Evaluate a classifier on the labelled files of a manifest, next to chance, the majority
class and the k-mer naive Bayes baseline.

``evaluate(model, manifest, out_dir)`` reads the rows of one split of a finetuning manifest
(``path  label  split``), classifies every record window by window with the classify pipeline
(``per_window``; a record's call is the softmax of the mean of its windows' log-probabilities),
and scores records and windows against the rows' labels (``mambadna.pipelines.metrics``). With
``baseline="kmer"`` a k-mer naive Bayes is fitted on train rows and scored on the SAME windows,
its record call aggregated the same way (mean of window log-posteriors, softmax). Records too
short for a window (``min_window``) get no call and are left out of the metrics
(``records_without_windows`` counts them).

Everything is checked before any model runs: the split, the output folder, the manifest and its
files, the model, that every label of the rows is a label of the model, and the baseline's
training rows. The folder is built beside ``out_dir`` under a hidden temporary name and renamed
into place when complete, so an error leaves nothing behind:

- ``predictions.tsv``: one row per record (``level`` records; start/end empty) followed by one
  per window (``level`` windows), with ``source, record_id, start, end, n_windows, true_label,
  predicted_label, probability, prob_<label>...`` (+ ``kmer_predicted_label,
  kmer_probability`` with the baseline);
- ``metrics.json``: ``records`` and ``windows`` (keys of classification_metrics),
  ``baselines.kmer`` (the same for the k-mer model, with its settings), ``metadata``;
- ``report.md`` with tables, and ``confusion.png``, ``per_class_recall.png``,
  ``comparison.png`` (mambadna.pipelines.evaluation_report).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from mambadna._version import __version__
from mambadna.atomic import atomic_directory
from mambadna.baselines import KmerNaiveBayes, fit_kmer_baseline
from mambadna.errors import ConfigError, InputError, OutputExistsError
from mambadna.manifests.labelled import SPLITS, ManifestRow, read_manifest
from mambadna.model import MambaDNA
from mambadna.pipelines.classify import check_classifier, classify
from mambadna.pipelines.inference import prepare_model, resolve_device
from mambadna.pipelines.metrics import classification_metrics, predict_labels
from mambadna.pipelines.sources import RecordStream

_log = logging.getLogger(__name__)

LEVELS = ("records", "windows")


@dataclass
class EvaluationResult:
    """What ``evaluate`` wrote: the folder, its files by name, the metrics and predictions."""

    out_dir: Path
    files: dict[str, Path]
    metrics: dict
    predictions: pd.DataFrame
    seconds: float


# ------------------------------------------------------------------ checks before any work


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not force:
        raise OutputExistsError("output folder already exists", path=out_dir,
                                fix="pass --force to replace it (Python: force=True), or "
                                    "choose another output folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError("exists and is a file; the output is a folder", path=out_dir,
                                fix="choose another output path")
    if not out_dir.parent.is_dir():
        raise ConfigError("the folder the output goes into does not exist", path=out_dir.parent,
                          fix=f"create it (mkdir -p {out_dir.parent}) or choose another path")


def _split_rows(manifest: Path, split: str) -> list[ManifestRow]:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}",
                          fix="use --split test (default), val or train")
    rows = read_manifest(manifest)
    chosen = [r for r in rows if r.split == split]
    if not chosen:
        present = sorted({r.split for r in rows})
        raise InputError(f"the manifest has no {split} rows (it has {', '.join(present)} rows)",
                         path=manifest, fix=f"add rows with split {split}, or choose one "
                                            f"with --split ({', '.join(present)})")
    return chosen


def _model_labels(model: MambaDNA) -> list[str]:
    # The classify pipeline's names for a model saved without labels.json.
    return list(model.labels or [f"class{i}" for i in range(model.config.num_labels)])


def _check_labels(rows: list[ManifestRow], labels: list[str], manifest: Path,
                  what: str = "the model") -> None:
    for row in rows:
        if row.label not in labels:
            raise ConfigError(f"label {row.label!r} of {row.path.name} is not a label of "
                              f"{what} (its labels: {', '.join(labels)})", path=manifest,
                              line=row.line, fix="fix the label's spelling in the manifest, "
                                                 "or evaluate a model trained on this label")


def _baseline(baseline, rows: list[ManifestRow], manifest: Path, train_manifest, k: int,
              read_opts: dict) -> KmerNaiveBayes | None:
    """The k-mer baseline asked for: fitted ("kmer"), given, or loaded from a folder."""
    if baseline is None or isinstance(baseline, KmerNaiveBayes):
        nb = baseline
    elif baseline == "kmer":
        source = Path(train_manifest) if train_manifest is not None else manifest
        if train_manifest is None and not any(r.split == "train"
                                              for r in read_manifest(manifest)):
            raise ConfigError("the k-mer baseline is trained on train rows, and this manifest "
                              "has none", path=manifest,
                              fix="pass --train-manifest TRAIN.tsv (the finetuning manifest)")
        nb = fit_kmer_baseline(source, k=k, **read_opts)
    elif isinstance(baseline, (str, os.PathLike)) and Path(baseline).is_dir():
        nb = KmerNaiveBayes.load(baseline)
    else:
        raise ConfigError(f"baseline must be 'kmer' or a saved k-mer baseline folder, got "
                          f"{baseline!r}", fix="use --baseline kmer, or --baseline DIR from "
                                               "`mambadna baseline fit`")
    if nb is not None:
        _check_labels(rows, nb.labels, manifest, what="the k-mer baseline")
    return nb


# ------------------------------------------------------------------ predictions


def _file_predictions(model: MambaDNA, row: ManifestRow, run: dict,
                      metadata: dict) -> pd.DataFrame:
    """Record and window rows of one file, with its source and true label; ``metadata``
    receives the classify run's (window, stride, weights checksum...)."""
    classify_log = logging.getLogger("mambadna.pipelines.classify")
    level = classify_log.level
    # evaluate warns once about records too short for a window, not once per file.
    classify_log.setLevel(logging.ERROR)
    try:
        frame = classify(model, row.path, per_window=True, **run)
    finally:
        classify_log.setLevel(level)
    metadata.update(frame.attrs.get("mambadna", {}))
    frame.insert(0, "level", np.where(frame["start"].isna(), "records", "windows"))
    frame.insert(1, "source", frame.pop("source"))  # classify's: the file of each record
    n_windows = frame.pop("n_windows")
    frame.insert(frame.columns.get_loc("predicted_label"), "n_windows", n_windows)
    frame.insert(frame.columns.get_loc("predicted_label"), "true_label", row.label)
    return frame


def _kmer_columns(nb: KmerNaiveBayes, frame: pd.DataFrame, row: ManifestRow,
                  read_opts: dict) -> pd.DataFrame:
    """kmer_predicted_label / kmer_probability for one file's rows, on the model's windows."""
    labels = np.array(nb.labels, dtype=object)
    predicted = np.full(len(frame), None, dtype=object)
    probability = np.full(len(frame), np.nan)
    records = np.flatnonzero(frame["level"].to_numpy() == "records")
    ends = np.append(records[1:], len(frame))
    stream = RecordStream([row.path], **read_opts)
    try:
        for record, first, stop in zip(stream, records, ends):
            # Same reader, same record order as classify: the k-th record is the k-th row.
            assert record.name == frame["record_id"].iat[first], (record.name, first)
            rows = np.arange(first + 1, stop)
            if not len(rows):
                continue
            starts = frame["start"].to_numpy()[rows].astype(np.int64)
            stops = frame["end"].to_numpy()[rows].astype(np.int64)
            starts, stops = starts - record.offset, stops - record.offset  # into the record
            log_probs = nb.predict_log_proba([record.tokens(s, e) for s, e in zip(starts, stops)])
            mean = log_probs.mean(axis=0, keepdims=True)
            mean -= np.logaddexp.reduce(mean, axis=1, keepdims=True)
            probs = np.exp(np.vstack([mean, log_probs]))
            predicted[first:stop] = predict_labels(probs, labels)
            probability[first:stop] = probs.max(axis=1)
    finally:
        stream.close()
    return frame.assign(kmer_predicted_label=predicted, kmer_probability=probability)


def _level_metrics(frame: pd.DataFrame, column: str, labels: list[str], seed: int) -> dict:
    out = {}
    for level in LEVELS:
        rows = frame[(frame["level"] == level) & frame[column].notna()]
        out[level] = classification_metrics(rows["true_label"], rows[column], labels, seed=seed)
    return out


# ------------------------------------------------------------------ writing


def _atomic_folder(out_dir: Path, force: bool, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a new hidden folder beside ``out_dir``, then rename it there
    (mambadna.atomic: nothing is left behind on an error or a signal)."""
    with atomic_directory(out_dir, check=lambda path: _check_out_dir(path, force)) as tmp:
        write(tmp)


def _write(tmp: Path, predictions: pd.DataFrame, metrics: dict) -> None:
    from mambadna.pipelines.evaluation_report import write_plots, write_report

    predictions.to_csv(tmp / "predictions.tsv", sep="\t", index=False, na_rep="",
                       float_format="%.6g")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = write_plots(metrics, tmp)
    write_report(metrics, tmp / "report.md", plots)


def evaluate(model: MambaDNA | str | os.PathLike, manifest: str | os.PathLike,
             out_dir: str | os.PathLike, *, split: str = "test", window: int | None = None,
             stride: int | None = None, min_window: int | None = None,
             baseline: str | os.PathLike | KmerNaiveBayes | None = None,
             train_manifest: str | os.PathLike | None = None, k: int = 6,
             batch_size: int = 8, rc_average: bool = False, device: str | None = None,
             force: bool = False, progress: bool | None = None, seed: int = 0,
             **read_opts) -> EvaluationResult:
    """Classify the ``split`` rows of ``manifest`` and write predictions, metrics, a report
    and plots to ``out_dir`` (see the module docstring).

    model: a classifier or its saved folder. window / stride / min_window: as for classify
    (default: the model's training window, non-overlapping). baseline: None, "kmer" (fit
    on the train rows of ``train_manifest``, default ``manifest``, with ``k``), a
    KmerNaiveBayes, or a folder saved by ``KmerNaiveBayes.save``. rc_average: score every
    window on both strands and average (as the k-mer baseline, which counts both strands,
    always does). seed: of the bootstrap.
    read_opts go to the readers (on_invalid, on_unknown, fmt, ...).

    Example::

        result = evaluate("runs/fine/model", "sim/manifest.tsv", "runs/eval", baseline="kmer")
        result.metrics["records"]["balanced_accuracy"]
    """
    started = time.perf_counter()
    manifest, out_dir = Path(manifest), Path(out_dir)
    _check_out_dir(out_dir, force)
    rows = _split_rows(manifest, split)
    net = prepare_model(model, resolve_device(device))
    check_classifier(net)
    labels = _model_labels(net)
    _check_labels(rows, labels, manifest)
    nb = _baseline(baseline, rows, manifest, train_manifest, k, read_opts)

    run = {"window": window, "stride": stride, "min_window": min_window,
           "batch_size": batch_size, "rc_average": rc_average, "device": device,
           "progress": progress, **read_opts}
    frames, run_metadata = [], {}
    for row in rows:
        frame = _file_predictions(net, row, run, run_metadata)
        frames.append(_kmer_columns(nb, frame, row, read_opts) if nb is not None else frame)
    predictions = pd.concat(frames, ignore_index=True)
    predictions[["start", "end"]] = predictions[["start", "end"]].astype("Int64")
    is_record = predictions["level"] == "records"
    missing = int((is_record & predictions["predicted_label"].isna()).sum())
    if missing == int(is_record.sum()):
        raise InputError(f"no record of the {split} rows is long enough for a window "
                         f"({run_metadata.get('min_window')} bases)", path=manifest,
                         fix="lower --window (and --min-window)")
    if missing:
        _log.warning("%d of %d records are shorter than the smallest window and have no call; "
                     "they are left out of the metrics", missing, int(is_record.sum()))

    metrics = _level_metrics(predictions, "predicted_label", labels, seed)
    if nb is not None:
        metrics["baselines"] = {"kmer": {
            **_level_metrics(predictions, "kmer_predicted_label", nb.labels, seed),
            "model": {key: value for key, value in nb.config().items() if key != "weights"}}}
    metrics["metadata"] = _metadata(model, manifest, split, rows, run_metadata, missing,
                                    baseline if nb is None else "kmer")
    _atomic_folder(out_dir, force, lambda tmp: _write(tmp, predictions, metrics))
    files = {p.name: p for p in sorted(out_dir.iterdir())}
    return EvaluationResult(out_dir, files, metrics, predictions, time.perf_counter() - started)


def _metadata(model, manifest: Path, split: str, rows: list[ManifestRow], run: dict,
              missing: int, baseline) -> dict:
    keep = ("model_config", "labels", "weights_sha256", "window", "stride", "min_window",
            "precision", "aggregation")
    return {
        "model": os.fspath(model) if isinstance(model, (str, os.PathLike)) else None,
        **{key: run.get(key) for key in keep},
        "manifest": os.fspath(manifest),
        "split": split,
        "files": [{"path": os.fspath(r.path), "label": r.label} for r in rows],
        "records_without_windows": missing,
        "baseline": baseline,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "coordinates": "0-based, half-open",
    }
