"""Figures (matplotlib): training curves of a run, confusion matrices, and the helpers every
plot of the package uses (evaluate, the demo, the context-length study, the workflow report).

Figures are ``matplotlib.figure.Figure`` objects on the Agg canvas, never pyplot: no display is
needed (clusters, CI), and a caller's pyplot backend and open figures are left alone. matplotlib
is imported when a figure is made, so importing this module is cheap (and torch-free). Files are
written through ``mambadna.atomic`` in the format their suffix names (.png, .svg, .pdf).

Training curves come from a run's ``metrics.csv`` (mambadna.train.runfolder): Lightning's CSV
logger writes sparse rows (train metrics on every --log-every step, validation metrics on their
own rows), so every metric column becomes a series of its non-empty rows against ``step``
(optimizer steps done, as in the log lines and checkpoint names).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mambadna.atomic import atomic_file
from mambadna.errors import ConfigError, InputError, InputFileError

FORMATS = (".png", ".svg", ".pdf")
PANELS: dict[str, tuple[str, ...]] = {
    "loss": ("loss",), "bits per base": ("bpb",), "accuracy": ("acc",),
    "learning rate": ("lr",), "sequence length": ("seq_len",)}
"""Panel of the training curves -> substrings of the metric names it shows (one scale each)."""
CURVES = ("loss", "accuracy")
"""The panels ``plot_run`` draws by default (where the run logged them)."""

Series = dict[str, dict[str, tuple[list[float], list[float]]]]


def figure(width: float, height: float):
    """An empty Figure of ``width`` x ``height`` inches on the Agg canvas (constrained layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format of its suffix (FORMATS)."""
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in FORMATS:
        raise ConfigError(f"cannot tell the figure format from the extension {fmt!r}",
                          path=path, fix=f"end the name with one of {', '.join(FORMATS)}")
    with atomic_file(path) as tmp:
        # svg: the text stays text (searchable, smaller), and no creation date: same data,
        # same file
        fig.savefig(tmp, dpi=dpi, format=fmt[1:],
                    metadata={"Date": None} if fmt == ".svg" else None)
    return path


def draw_confusion(ax, labels: Sequence[str], matrix, title: str = ""):
    """A confusion matrix on ``ax``: rows true, columns predicted; shaded by the share of
    each true class, counts written in the cells. Returns the image (for a colorbar)."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, f"{int(value)}", ha="center", va="center",
                color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return image


def confusion_figure(labels: Sequence[str], matrix, title: str = ""):
    """A figure of one confusion matrix (draw_confusion) with its colorbar."""
    n = len(labels)
    fig = figure(max(4.0, 0.6 * n + 2.5), max(3.5, 0.6 * n + 2))
    ax = fig.subplots()
    fig.colorbar(draw_confusion(ax, labels, matrix, title), ax=ax, shrink=0.8,
                 label="share of the true class")
    return fig


# ------------------------------------------------------------------ training curves


def read_metrics(path: str | os.PathLike):
    """A run's metrics as a DataFrame: ``path`` is a run folder or a metrics.csv file."""
    import pandas as pd

    path = Path(path)
    csv = path / "metrics.csv" if path.is_dir() else path
    if not csv.is_file():
        raise InputFileError("no metrics.csv here: not a training run folder", path=csv,
                             fix="pass the folder given to `mambadna pretrain/finetune -o`")
    try:
        return pd.read_csv(csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"not a metrics table ({str(err).splitlines()[0]})", path=csv,
                         fix="rerun the training run, or pass its run folder") from None


def training_series(metrics) -> Series:
    """metrics.csv (DataFrame) -> {panel: {column: (steps, values)}} for every PANELS entry
    (empty where nothing was logged)."""
    import pandas as pd

    x = "step" if "step" in metrics else metrics.columns[0]
    series: Series = {name: {} for name in PANELS}
    for column in metrics.columns:
        if column in ("step", "epoch") or not pd.api.types.is_numeric_dtype(metrics[column]):
            continue
        panel = next((name for name, keys in PANELS.items()
                      if any(key in column.lower() for key in keys)), None)
        rows = metrics[[x, column]].dropna()
        if panel is not None and not rows.empty:
            series[panel][column] = (rows[x].tolist(), rows[column].tolist())
    return series


def training_figure(series: Series, panels: Sequence[str] = CURVES, title: str = ""):
    """Training curves: one panel per name in ``panels`` that has data, side by side
    (train solid, validation dashed with markers); None if none has data."""
    shown = [name for name in panels if series.get(name)]
    if not shown:
        return None
    fig = figure(4.6 * len(shown), 3.4)
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, name in zip(axes, shown):
        for column, (steps, values) in series[name].items():
            val = column.startswith("val")
            ax.plot(steps, values, ls="--" if val else "-", marker="o" if val else None,
                    ms=3, label=column)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if name == "accuracy":
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
             panels: Sequence[str] = CURVES, title: str | None = None) -> Path:
    """Draw the training curves (loss, accuracy: PANELS names) of a run folder (or of a
    metrics.csv) into ``out`` (default RUN_DIR/training_curves.png; .png/.svg/.pdf)."""
    unknown = [name for name in panels if name not in PANELS]
    if unknown:
        raise ConfigError(f"unknown panel {unknown[0]!r}",
                          fix=f"choose among {', '.join(PANELS)}")
    source = Path(run_dir)
    series = training_series(read_metrics(source))
    folder = source if source.is_dir() else source.parent
    fig = training_figure(series, panels, title if title is not None else folder.name)
    if fig is None:
        raise InputError(f"the run logged none of {', '.join(panels)} yet",
                         path=folder / "metrics.csv" if source.is_dir() else source,
                         fix="let it run past --log-every steps, or lower --log-every")
    return save(fig, out if out is not None else folder / "training_curves.png")


def last_values(series: Mapping[str, tuple[list[float], list[float]]]) -> list[dict]:
    """The last step and value of each column of one panel (for report tables)."""
    return [{"metric": column, "last step": int(steps[-1]), "value": f"{values[-1]:.4g}"}
            for column, (steps, values) in series.items()]
