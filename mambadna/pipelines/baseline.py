"""The k-mer naive Bayes baseline over whole input files, as ``classify`` runs a model.

``predict_kmer(baseline, inputs)`` scores every record of FASTA/FASTQ/SAM/BAM/CRAM inputs with a
KmerNaiveBayes (mambadna.baselines). Without ``window`` a record is scored whole (its k-mer
counts, both strands): the natural naive Bayes call. With ``window`` the record is cut into the
windows classify would use (mambadna.pipelines.tiling) and its call is the softmax of the mean
of its windows' log-posteriors, as classify aggregates a model's windows.

Columns: ``source, record_id, start, end, predicted_label, probability, n_windows,
prob_<label>...`` (``per_window`` adds each window's row after its record's, whose start and
end stay empty); ties go to the first label of the baseline. With regions, as in classify: a
``region`` column after ``record_id`` and a FASTA region's windows in genome coordinates.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mambadna.baselines import KmerNaiveBayes
from mambadna.errors import ConfigError
from mambadna.pipelines.classify import write_predictions
from mambadna.pipelines.metrics import predict_labels
from mambadna.pipelines.output import TABLE_FORMATS, atomic_output, check_output, output_format
from mambadna.pipelines.run import Inputs
from mambadna.pipelines.sources import RecordStream
from mambadna.pipelines.tiling import WindowSpec


def _rows(nb: KmerNaiveBayes, record, spec: WindowSpec | None, per_window: bool) -> list[dict]:
    spans = np.array([[0, record.length]]) if spec is None else spec.of(record.length)
    row = {"source": record.source, "record_id": record.name, "region": record.region,
           "start": None, "end": None, "n_windows": len(spans)}
    if not len(spans):
        return [{**row, "predicted_label": None, "probability": np.nan}]
    log_probs = nb.predict_log_proba([record.tokens(int(s), int(e)) for s, e in spans])
    mean = log_probs.mean(axis=0, keepdims=True)
    mean -= np.logaddexp.reduce(mean, axis=1, keepdims=True)
    probs = np.exp(np.vstack([mean, log_probs] if per_window and spec is not None else [mean]))
    names = predict_labels(probs, nb.labels)
    out = []
    for i, (p, name) in enumerate(zip(probs, names)):
        # in genome coordinates, as classify reports them (a region starts at its offset)
        extra = {} if i == 0 else {"start": record.offset + int(spans[i - 1, 0]),
                                   "end": record.offset + int(spans[i - 1, 1]), "n_windows": 1}
        out.append({**row, **extra, "predicted_label": name, "probability": float(p.max()),
                    **{f"prob_{x}": float(v) for x, v in zip(nb.labels, p)}})
    return out


def predict_kmer(baseline: KmerNaiveBayes | str | os.PathLike, inputs: Inputs, *,
                 window: int | None = None, stride: int | None = None,
                 min_window: int | None = None, per_window: bool = False,
                 out: str | os.PathLike | None = None, force: bool = False,
                 **read_opts) -> pd.DataFrame:
    """Predict the label of every record of ``inputs`` with a k-mer baseline (or its folder).

    window / stride / min_window: as for classify; ``window=None`` scores each record whole.
    out: also write the table (.tsv, .csv or .parquet, atomically). read_opts go to the readers
    (on_invalid, on_unknown, fmt, region, ...). Returns the predictions DataFrame.
    """
    if per_window and window is None:
        raise ConfigError("per_window needs windows: a record scored whole has none",
                          fix="pass --window N with --per-window")
    fmt = None
    if out is not None:
        fmt = output_format(out, TABLE_FORMATS)
        check_output(out, force=force)
    nb = baseline if isinstance(baseline, KmerNaiveBayes) else KmerNaiveBayes.load(baseline)
    spec = None if window is None else WindowSpec.resolve(
        window=window, stride=stride, min_window=min_window, stream=False, trained_length=None)
    stream = RecordStream(inputs, **read_opts)
    rows: list[dict] = []
    try:
        for record in stream:
            rows += _rows(nb, record, spec, per_window)
    finally:
        stream.close()
    columns = ["source", "record_id", *(["region"] if stream.options.region else []),
               "start", "end", "predicted_label", "probability", "n_windows",
               *[f"prob_{x}" for x in nb.labels]]
    frame = pd.DataFrame(rows, columns=columns)
    frame[["start", "end"]] = frame[["start", "end"]].astype("Int64")
    if out is not None:
        metadata = {**nb.config(), "window": window, "stride": spec and spec.stride,
                    "min_window": spec and spec.min_window, "per_window": per_window,
                    "inputs": [os.fspath(p) for p in ([inputs] if isinstance(
                        inputs, (str, os.PathLike)) else inputs)]}
        with atomic_output(out, force=force) as tmp:
            write_predictions(frame, tmp, fmt, metadata)
        frame.attrs["out"] = Path(out)
    return frame
