"""What ``evaluate`` shows: the screen summary, ``report.md`` and the PNG plots.

Everything is drawn from the ``metrics.json`` dict (mambadna.pipelines.evaluate), so a report
can be redrawn from a saved evaluation. The figures are mambadna.plots ones (matplotlib's Agg
canvas, no pyplot, no display; matplotlib imported only when plots are drawn).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mambadna.plots import draw_confusion, figure, save

LEVELS = ("records", "windows")
PLOTS = {"confusion": "confusion.png", "per_class_recall": "per_class_recall.png",
         "comparison": "comparison.png"}


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_interval(m: dict, key: str) -> str:
    low, high = m[f"{key}_interval"]
    return f"{m[key]:.3f} [{low:.3f}, {high:.3f}]"


def _kmer(metrics: dict) -> dict | None:
    return metrics.get("baselines", {}).get("kmer")


# ------------------------------------------------------------------ screen


def summary(metrics: dict, files: dict[str, Path] | None = None) -> str:
    """A one-screen summary: balanced accuracy (+ interval), accuracy, chance, majority and
    k-mer baselines, per-class recall, and the files written."""
    kmer = _kmer(metrics)
    lines = [f"{'':<36}{'records':<28}windows"]

    def row(name: str, cell) -> None:
        lines.append(f"{name:<36}" + "".join(f"{cell(level):<28}" for level in LEVELS).rstrip())

    row("balanced accuracy (95% CI)", lambda v: _with_interval(metrics[v], "balanced_accuracy"))
    row("accuracy (95% CI)", lambda v: _with_interval(metrics[v], "accuracy"))
    row("macro-F1", lambda v: _num(metrics[v]["macro_f1"]))
    row("n", lambda v: str(metrics[v]["n"]))
    row("chance (1 / classes)", lambda v: _num(metrics[v]["chance"]))
    row("majority baseline (accuracy)", lambda v: f"{metrics[v]['majority_baseline']:.3f} "
                                                  f"({metrics[v]['majority_label']})")
    if kmer is not None:
        row(f"k-mer baseline (k={kmer['model']['k']}), bal. acc.",
            lambda v: _with_interval(kmer[v], "balanced_accuracy"))
    lines.append("per-class recall (records / windows"
                 + (" / k-mer windows):" if kmer else "):"))
    for label, w in metrics["windows"]["per_class"].items():
        cells = [metrics["records"]["per_class"][label]["recall"], w["recall"]]
        if kmer is not None:
            cells.append(kmer["windows"]["per_class"].get(label, {}).get("recall"))
        lines.append(f"  {label:<34}" + " / ".join(_num(c) for c in cells)
                     + f"   (n = {metrics['records']['per_class'][label]['n']} / {w['n']})")
    if files:
        folders = {os.fspath(p.parent) for p in files.values()}
        where = f"{folders.pop()}{os.sep}" if len(folders) == 1 else ""
        lines.append(f"files{' in ' + where if where else ''}: " + ", ".join(
            p.name if where else os.fspath(p) for p in files.values()))
    return "\n".join(lines)


# ------------------------------------------------------------------ report.md


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _confusion_table(m: dict) -> list[str]:
    labels, matrix = m["confusion"]["labels"], m["confusion"]["matrix"]
    return _table(["true \\ predicted", *labels],
                  [[label, *map(str, counts)] for label, counts in zip(labels, matrix)])


def write_report(metrics: dict, path: str | os.PathLike, plots: dict[str, Path]) -> Path:
    """Markdown: summary table, per-class table, confusion matrices, plots, definitions."""
    meta, kmer = metrics["metadata"], _kmer(metrics)
    lines = [f"# Evaluation of {meta['model'] or 'a model in memory'}", "",
             f"{meta['split']} rows of `{meta['manifest']}` ({len(meta['files'])} files); "
             f"windows of {meta['window']} bases every {meta['stride']} "
             f"(last partial window kept from {meta['min_window']}); mambadna "
             f"{meta['version']}, {meta['date']}.", ""]
    if meta["records_without_windows"]:
        lines += [f"{meta['records_without_windows']} records are shorter than the smallest "
                  "window: no call, not in the metrics.", ""]
    header = ["level", "n", "balanced accuracy (95% CI)", "accuracy (95% CI)", "macro-F1",
              "chance", "majority class (accuracy)"]
    if kmer is not None:
        header.append(f"k-mer NB (k={kmer['model']['k']}) balanced accuracy")
    rows = []
    for level in LEVELS:
        m = metrics[level]
        rows.append([level, str(m["n"]), _with_interval(m, "balanced_accuracy"),
                     _with_interval(m, "accuracy"), _num(m["macro_f1"]), _num(m["chance"]),
                     f"{m['majority_baseline']:.3f} ({m['majority_label']})"]
                    + ([_with_interval(kmer[level], "balanced_accuracy")] if kmer else []))
    lines += ["## Summary", "", *_table(header, rows)]
    header = ["label", "records n", "records recall", "records precision", "windows n",
              "windows recall", "windows precision"] + (["k-mer windows recall"] if kmer else [])
    rows = []
    for label, r in metrics["records"]["per_class"].items():
        w = metrics["windows"]["per_class"][label]
        rows.append([label, str(r["n"]), _num(r["recall"]), _num(r["precision"]), str(w["n"]),
                     _num(w["recall"]), _num(w["precision"])]
                    + ([_num(kmer["windows"]["per_class"].get(label, {}).get("recall"))]
                       if kmer else []))
    lines += ["## Per class", "", *_table(header, rows)]
    for level in LEVELS:
        lines += [f"## Confusion matrix ({level})", "", *_confusion_table(metrics[level])]
    if kmer is not None:
        lines += ["## k-mer baseline", "",
                  f"Multinomial naive Bayes on k-mer counts of both strands, k = "
                  f"{kmer['model']['k']}, Laplace alpha = {kmer['model']['alpha']}, uniform "
                  f"prior, labels {', '.join(kmer['model']['labels'])}; trained on "
                  f"{kmer['model']['summary'].get('training', 'given counts')}; scored on the "
                  "same windows, records as the softmax of the mean window log-posterior.", "",
                  "### Confusion matrix (k-mer, windows)", "", *_confusion_table(kmer["windows"])]
    lines += ["## Plots", "", *(f"![{name}]({p.name})" for name, p in plots.items()), ""]
    method = metrics["records"]["interval_method"]
    lines += ["## Definitions", "",
              "- Balanced accuracy: mean recall over the classes present in the test rows; "
              f"interval: {method['balanced_accuracy']}.",
              f"- Accuracy interval: {method['accuracy']}.",
              "- Macro-F1: mean F1 over the classes present; a class never predicted has "
              "precision undefined ('-') and F1 0.",
              "- Chance: 1 / the model's classes. Majority class: accuracy of always answering "
              "the most frequent true label.",
              "- Records: softmax of the mean of their windows' log-probabilities. Argmax ties "
              "go to the first label in the model's order.", ""]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------ plots


def _plot_confusion(metrics: dict, path: Path) -> None:
    fig = figure(11, 4.8)
    axes = fig.subplots(1, 2)
    for ax, level in zip(axes, LEVELS):
        confusion = metrics[level]["confusion"]
        image = draw_confusion(ax, confusion["labels"], confusion["matrix"],
                               f"{level} (share of each true class; counts)")
    fig.colorbar(image, ax=axes, shrink=0.8)
    save(fig, path)


def _plot_recall(metrics: dict, path: Path) -> None:
    kmer = _kmer(metrics)
    series = [(f"model, {level}", metrics[level]) for level in LEVELS]
    if kmer is not None:
        series += [(f"k-mer, {level}", kmer[level]) for level in LEVELS]
    labels = list(metrics["windows"]["per_class"])
    width = 0.8 / len(series)
    fig = figure(max(6, 1.3 * len(labels) + 2), 4)
    ax = fig.subplots()
    for s, (name, m) in enumerate(series):
        recall = [m["per_class"].get(x, {}).get("recall") for x in labels]
        ax.bar(np.arange(len(labels)) + (s - (len(series) - 1) / 2) * width,
               [np.nan if r is None else r for r in recall], width, label=name)
    ax.axhline(metrics["windows"]["chance"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)


def _plot_comparison(metrics: dict, path: Path) -> None:
    kmer = _kmer(metrics)
    fig = figure(7, 4)
    ax = fig.subplots()
    bars = [("model", lambda v: metrics[v], "balanced_accuracy", "C0")]
    if kmer is not None:
        bars.append(("k-mer naive Bayes", lambda v: kmer[v], "balanced_accuracy", "C1"))
    bars += [("majority class (accuracy)", lambda v: metrics[v], "majority_baseline", "0.6"),
             ("chance", lambda v: metrics[v], "chance", "0.8")]
    width = 0.8 / len(bars)
    for b, (name, of, key, color) in enumerate(bars):
        x = np.arange(len(LEVELS)) + (b - (len(bars) - 1) / 2) * width
        values = [of(v)[key] for v in LEVELS]
        errors = None
        if key == "balanced_accuracy":
            errors = np.array([[value - of(v)["balanced_accuracy_interval"][0],
                                of(v)["balanced_accuracy_interval"][1] - value]
                               for v, value in zip(LEVELS, values)]).T
        ax.bar(x, values, width, yerr=errors, capsize=4, color=color, label=name)
    ax.set_xticks(range(len(LEVELS)), LEVELS)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("balanced accuracy (95% CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)


def write_plots(metrics: dict, folder: str | os.PathLike) -> dict[str, Path]:
    """Draw the confusion matrices, per-class recall and model-vs-baselines PNGs."""
    folder = Path(folder)
    out = {name: folder / file for name, file in PLOTS.items()}
    _plot_confusion(metrics, out["confusion"])
    _plot_recall(metrics, out["per_class_recall"])
    _plot_comparison(metrics, out["comparison"])
    return out
