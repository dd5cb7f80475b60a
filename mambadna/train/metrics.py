"""Classification metrics from a confusion matrix, and the matrix as CSV.

Computed with torch on the accumulated (all-reduced) matrix, so multi-GPU validation reports the
metrics of the whole validation set, not averages of per-device values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mambadna.atomic import atomic_file


def confusion_update(matrix: torch.Tensor, target: torch.Tensor,
                     predicted: torch.Tensor) -> torch.Tensor:
    """Add counts to ``matrix`` (num_labels, num_labels): rows true label, columns predicted."""
    k = matrix.shape[0]
    flat = target.long() * k + predicted.long()
    matrix += torch.bincount(flat, minlength=k * k).reshape(k, k).to(matrix)
    return matrix


def accuracy(matrix: torch.Tensor) -> float:
    total = matrix.sum()
    return float(matrix.diagonal().sum() / total) if total > 0 else float("nan")


def macro_f1(matrix: torch.Tensor) -> float:
    """Mean over labels of F1 = 2 TP / (2 TP + FP + FN); labels absent from both sides skipped."""
    m = matrix.double()
    tp = m.diagonal()
    denominator = m.sum(0) + m.sum(1)  # (TP + FP) + (TP + FN)
    present = denominator > 0
    if not present.any():
        return float("nan")
    return float((2 * tp[present] / denominator[present]).mean())


def write_confusion_csv(matrix: torch.Tensor, labels: Sequence[str],
                        path: str | os.PathLike) -> Path:
    """CSV with a ``true\\predicted`` header row of labels and one row per true label (atomic)."""
    path = Path(path)
    counts = matrix.long().tolist()
    lines = [",".join(["true\\predicted", *labels])]
    lines += [",".join([label, *map(str, row)]) for label, row in zip(labels, counts)]
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
