"""Classification metrics with intervals and reference points, from true and predicted labels.

Torch-free (numpy only): used by ``mambadna evaluate`` for the model and for the k-mer
baseline alike. ``classification_metrics`` returns a JSON-ready dict:

- ``n``, ``accuracy`` (+ ``accuracy_interval``: Wilson score interval),
- ``balanced_accuracy``: the mean recall over the classes PRESENT in the truth (+
  ``balanced_accuracy_interval``: percentile bootstrap, see below),
- ``macro_f1``: the mean F1 = 2 TP / (2 TP + FP + FN) over the classes present in the truth,
- ``chance``: 1 / the number of classes of the model (a uniform random guess),
- ``majority_baseline``: the accuracy of always answering the most frequent TRUE label
  (``majority_label``; ties: first in the model's order),
- ``per_class``: ``{label: {n, predicted, recall, precision, f1}}`` for every class of the model,
- ``confusion``: ``{labels, matrix}``, rows the true label, columns the predicted one,
- ``interval_method``: how each interval was computed.

Edge cases, by definition:

- A class never predicted: its precision is undefined (0/0) and reported as null; its F1 is
  0 whenever it is present in the truth (TP = 0), and counts as 0 in macro-F1.
- A class absent from the truth (n = 0): listed with n = 0 and recall null (precision 0 if it
  was predicted, else null); it is excluded from balanced accuracy and from the macro-F1
  average, which would otherwise reward or punish a class the test set cannot measure. (Its
  false positives still lower the recall of the classes they were taken from.)
- Ties in argmax (``predict_labels``): the first label in the model's order wins, as numpy's
  argmax and the classify pipeline decide.

The balanced-accuracy bootstrap resamples items with replacement WITHIN each true class
(stratified: class sizes are fixed by the test design, and balanced accuracy weighs classes
equally, so no resample loses a class). The number correct of a class in such a resample is
Binomial(n_class, recall_class), which is what is drawn: same distribution as resampling the
items, without materialising them. Seeded, so metrics.json is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from mambadna.errors import InputError

N_BOOTSTRAP = 1000
"""Bootstrap resamples for the balanced-accuracy interval."""
CONFIDENCE = 0.95
"""Coverage of the reported intervals."""


def predict_labels(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """(n, k) probabilities (or log-probabilities) -> (n,) labels; ties go to the first label
    in ``labels`` order."""
    probs = np.asarray(probs)
    return np.array(list(labels), dtype=object)[probs.argmax(axis=1)] if len(probs) \
        else np.array([], dtype=object)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE
                    ) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (n > 0)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Exact ends at 0 and n (the formula gives them only up to rounding).
    low = 0.0 if successes == 0 else max(0.0, float(center - half))
    high = 1.0 if successes == n else min(1.0, float(center + half))
    return low, high


def bootstrap_balanced_accuracy(correct_per_class: np.ndarray, n_per_class: np.ndarray, *,
                                n_resamples: int = N_BOOTSTRAP, seed: int = 0,
                                confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of balanced accuracy under a stratified bootstrap (module doc).

    correct_per_class, n_per_class: (k,) counts of the classes present (n > 0).
    """
    rng = np.random.default_rng(seed)
    n = np.asarray(n_per_class, dtype=np.int64)
    recall = np.asarray(correct_per_class, dtype=np.float64) / n
    draws = rng.binomial(n[None, :], recall[None, :], size=(n_resamples, len(n))) / n
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws.mean(axis=1), [tail, 100 - tail])
    return float(low), float(high)


def confusion_matrix(truth: Sequence[str], predicted: Sequence[str],
                     labels: Sequence[str]) -> np.ndarray:
    """(k, k) int64 counts, rows the true label, columns the predicted one (``labels`` order).

    Every true and predicted label must be one of ``labels`` (InputError otherwise).
    """
    index = {label: i for i, label in enumerate(labels)}
    for what, values in (("true", truth), ("predicted", predicted)):
        unknown = sorted({str(v) for v in values} - set(index))
        if unknown:
            raise InputError(f"{what} label(s) {', '.join(map(repr, unknown))} are not among "
                             f"the classes {', '.join(labels)}",
                             fix="compare with a model trained on these labels")
    k = len(labels)
    rows = np.array([index[str(v)] for v in truth], dtype=np.int64)
    cols = np.array([index[str(v)] for v in predicted], dtype=np.int64)
    return np.bincount(rows * k + cols, minlength=k * k).reshape(k, k)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def per_class_metrics(matrix: np.ndarray, labels: Sequence[str]) -> dict:
    """``{label: {n, predicted, recall, precision, f1}}``; undefined ratios are None."""
    out = {}
    for i, label in enumerate(labels):
        tp, n, predicted = int(matrix[i, i]), int(matrix[i].sum()), int(matrix[:, i].sum())
        out[label] = {"n": n, "predicted": predicted, "recall": _ratio(tp, n),
                      "precision": _ratio(tp, predicted),
                      "f1": _ratio(2 * tp, n + predicted) if n else None}
    return out


def classification_metrics(truth: Sequence[str], predicted: Sequence[str],
                           labels: Sequence[str], *, n_bootstrap: int = N_BOOTSTRAP,
                           seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """The metrics of the module docstring for ``predicted`` against ``truth``.

    labels: the model's classes, in its order (defines chance, the confusion matrix's order
    and argmax ties). InputError if the inputs are empty, of different lengths, or hold a
    label outside ``labels``.
    """
    labels = [str(x) for x in labels]
    truth, predicted = list(truth), list(predicted)
    if len(truth) != len(predicted):
        raise InputError(f"{len(truth)} true labels but {len(predicted)} predictions")
    if not truth:
        raise InputError("nothing to evaluate: no predictions",
                         fix="check that the test data has records long enough for a window")
    matrix = confusion_matrix(truth, predicted, labels)
    n = int(matrix.sum())
    correct = int(np.trace(matrix))
    n_class = matrix.sum(axis=1)
    present = n_class > 0
    tp = matrix.diagonal()
    recall = tp[present] / n_class[present]
    f1 = 2 * tp[present] / (n_class[present] + matrix.sum(axis=0)[present])
    majority = int(np.argmax(n_class))
    return {
        "n": n,
        "accuracy": correct / n,
        "accuracy_interval": list(wilson_interval(correct, n, confidence)),
        "balanced_accuracy": float(recall.mean()),
        "balanced_accuracy_interval": list(bootstrap_balanced_accuracy(
            tp[present], n_class[present], n_resamples=n_bootstrap, seed=seed,
            confidence=confidence)),
        "macro_f1": float(f1.mean()),
        "chance": 1 / len(labels),
        "majority_baseline": int(n_class[majority]) / n,
        "majority_label": labels[majority],
        "classes_present": [x for x, p in zip(labels, present) if p],
        "per_class": per_class_metrics(matrix, labels),
        "confusion": {"labels": labels, "matrix": matrix.tolist(),
                      "rows": "true label", "columns": "predicted label"},
        "interval_method": {
            "confidence": confidence,
            "accuracy": "Wilson score interval",
            "balanced_accuracy": f"percentile bootstrap, {n_bootstrap} resamples within each "
                                 f"true class (stratified), seed {seed}",
        },
    }
