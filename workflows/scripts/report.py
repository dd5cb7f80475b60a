"""Build the workflow report: training curves, confusion matrix, data and embedding summaries.

Writes ``report.md`` and ``report.html`` (plots inline as SVG) plus ``training_curves.svg``,
``confusion_matrix.svg`` and ``summary.json`` into ``--out``. Reads only the files the
``mambadna`` commands write (metrics.csv, predictions TSV, token-store index.parquet,
embeddings Parquet); it imports nothing from mambadna, so it documents the file contracts.
Dependencies: pandas and pyarrow (mambadna's own), no plotting library.
"""

from __future__ import annotations

import argparse
import html
import json
import math
from pathlib import Path

import pandas as pd

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]


# --- SVG plots ----------------------------------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str,
               width: int = 640, height: int = 320) -> str:
    """An SVG line chart of named (x, y) series."""
    left, right, top, bottom = 60, 150, 30, 45
    xs = [x for xv, _ in series.values() for x in xv]
    ys = [y for _, yv in series.values() for y in yv]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + ph - (y - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">'
           f'{html.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left - 4}" x2="{left}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                   f'stroke="#999"/><text x="{left - 6}" y="{sy(t) + 4:.1f}" '
                   f'text-anchor="end">{t:.3g}</text>')
    for t in _ticks(x0, x1):
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" '
                   f'stroke="#999"/><text x="{sx(t):.1f}" y="{top + ph + 16}" '
                   f'text-anchor="middle">{t:.3g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">'
               f'{html.escape(xlabel)}</text>')
    for i, (name, (xv, yv)) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xv, yv))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" '
                   'stroke-width="1.5"/>')
        if len(xv) == 1:
            out.append(f'<circle cx="{sx(xv[0]):.1f}" cy="{sy(yv[0]):.1f}" r="3" '
                       f'fill="{color}"/>')
        ly = top + 12 + 16 * i
        out.append(f'<line x1="{width - right + 10}" x2="{width - right + 30}" y1="{ly - 4}" '
                   f'y2="{ly - 4}" stroke="{color}" stroke-width="2"/><text '
                   f'x="{width - right + 34}" y="{ly}">{html.escape(name)}</text>')
    return "\n".join([*out, "</svg>"])


def heatmap(matrix: list[list[int]], labels: list[str], title: str, cell: int = 48) -> str:
    """An SVG confusion matrix: rows true labels, columns predicted, counts in the cells."""
    left, top = 110, 90
    n = len(labels)
    width, height = left + n * cell + 20, top + n * cell + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">'
           f'{html.escape(title)}</text>',
           f'<text x="{left + n * cell / 2}" y="34" text-anchor="middle">predicted</text>',
           f'<text x="14" y="{top + n * cell / 2}" transform="rotate(-90 14 '
           f'{top + n * cell / 2})" text-anchor="middle">true</text>']
    for i, row in enumerate(matrix):
        total = max(1, sum(row))
        for j, count in enumerate(row):
            share = count / total
            shade = int(255 - 200 * share)
            out.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" '
                       f'height="{cell}" fill="rgb({shade},{shade},255)" stroke="#fff"/>'
                       f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}"'
                       f' text-anchor="middle" fill="{"#fff" if share > 0.6 else "#000"}">'
                       f'{count}</text>')
    for k, label in enumerate(labels):
        name = html.escape(label[:12])
        out.append(f'<text x="{left - 6}" y="{top + k * cell + cell / 2 + 4}" '
                   f'text-anchor="end">{name}</text>')
        x = left + k * cell + cell / 2
        out.append(f'<text x="{x}" y="{top - 6}" text-anchor="start" '
                   f'transform="rotate(-40 {x} {top - 6})">{name}</text>')
    return "\n".join([*out, "</svg>"])


# --- reading the runs ---------------------------------------------------------------------------

# Chart -> substrings of the metric names it shows (one scale per chart).
_GROUPS = {"loss": ("loss", "bpb", "ppl", "perplexity"), "accuracy": ("acc",),
           "learning rate": ("lr",), "sequence length": ("seq_len",)}


def training_series(metrics_csv: Path) -> dict[str, dict[str, tuple[list, list]]]:
    """Lightning CSV metrics -> {chart: {column: (steps, values)}}.

    The CSV logger writes sparse rows (each metric on its own steps): every numeric column but
    step/epoch becomes a series of its non-empty rows, on the chart its name belongs to.
    """
    frame = pd.read_csv(metrics_csv)
    x = "step" if "step" in frame else frame.columns[0]
    groups: dict[str, dict[str, tuple[list, list]]] = {name: {} for name in _GROUPS}
    for column in frame.columns:
        if column in ("step", "epoch") or not pd.api.types.is_numeric_dtype(frame[column]):
            continue
        rows = frame[[x, column]].dropna()
        group = next((g for g, keys in _GROUPS.items()
                      if any(k in column.lower() for k in keys)), None)
        if rows.empty or group is None:
            continue
        groups[group][column] = (rows[x].tolist(), rows[column].tolist())
    return groups


def confusion(predictions: dict[str, Path]) -> tuple[list[str], list[list[int]], str]:
    """{true label: predictions TSV} -> (labels, matrix [true][predicted], unit).

    Window rows (``start`` filled, from --per-window) are counted when present, otherwise
    one row per record.
    """
    frames = []
    for label, path in predictions.items():
        frame = pd.read_csv(path, sep="\t")
        frame["true_label"] = label
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    unit = "record"
    if "start" in table and table["start"].notna().any():
        table, unit = table[table["start"].notna()], "window"
    labels = list(predictions)
    labels += sorted(set(table["predicted_label"].astype(str)) - set(labels))
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for true, predicted in zip(table["true_label"], table["predicted_label"].astype(str)):
        matrix[index[true]][index[predicted]] += 1
    return labels, matrix, unit


def store_summary(stores: dict[str, Path]) -> list[dict]:
    rows = []
    for split, store in stores.items():
        index = pd.read_parquet(Path(store) / "index.parquet")
        length = int(index["length"].sum())
        rows.append({"split": split, "records": len(index), "bases": length,
                     "N fraction": round(float(index["n_count"].sum()) / max(length, 1), 4)})
    return rows


def embedding_summary(paths: list[Path]) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for path in paths:
        table = pq.read_table(path)
        width = table.schema.field("embedding").type.list_size if "embedding" in \
            table.column_names else None
        rows.append({"file": Path(path).name, "windows": table.num_rows, "dimensions": width})
    return rows


# --- the report ---------------------------------------------------------------------------------

def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "_none_"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(blocks: list[tuple], title: str) -> tuple[str, str]:
    """Blocks ("h", text) ("p", text) ("table", rows) ("svg", file name, svg) -> (md, html)."""
    md, body = [f"# {title}", ""], []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            md += [f"## {block[1]}", ""]
            body.append(f"<h2>{html.escape(block[1])}</h2>")
        elif kind == "p":
            md += [block[1], ""]
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            md += [_md_table(block[1]), ""]
            body.append(_html_table(block[1]))
        elif kind == "svg":
            md += [f"![{block[1]}]({block[1]})", ""]
            body.append(f"<figure>{block[2]}</figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(body) + "</body></html>\n")
    return "\n".join(md) + "\n", page


def _curves(blocks: list, files: dict, name: str, run: Path | None) -> None:
    if run is None:
        return
    groups = training_series(run / "metrics.csv")
    blocks.append(("h", f"{name.capitalize()} ({run})"))
    if not any(groups.values()):
        blocks.append(("p", "No metrics were logged (the run was shorter than --log-every)."))
    for group, series in groups.items():
        if not series:
            continue
        svg_name = f"{name}_{group.replace(' ', '_')}_curves.svg"
        files[svg_name] = line_chart(series, f"{name}: {group}", "step")
        blocks.append(("svg", svg_name, files[svg_name]))
        last = [{"metric": k, "last step": int(xs[-1]), "value": f"{ys[-1]:.4g}"}
                for k, (xs, ys) in series.items()]
        blocks.append(("table", last))


def build(args: argparse.Namespace) -> dict:
    """Assemble the report; returns the summary written to summary.json."""
    blocks: list[tuple] = []
    files: dict[str, str] = {}
    summary: dict = {"run": args.title}
    if args.store:
        stores = dict(item.split("=", 1) for item in args.store)
        rows = store_summary({k: Path(v) for k, v in stores.items()})
        blocks += [("h", "Data (token stores)"), ("table", rows)]
        summary["data"] = rows
    _curves(blocks, files, "pretraining", args.pretrain_run)
    _curves(blocks, files, "finetuning", args.finetune_run)
    if args.predictions:
        predictions = {k: Path(v) for k, v in (i.split("=", 1) for i in args.predictions)}
        labels, matrix, unit = confusion(predictions)
        total = sum(map(sum, matrix))
        correct = sum(matrix[i][i] for i in range(len(predictions)))
        accuracy = correct / total if total else float("nan")
        files["confusion_matrix.svg"] = heatmap(matrix, labels, f"test set, per {unit}")
        recall = [{"label": label, f"{unit}s": sum(row),
                   "recall": f"{row[i] / max(1, sum(row)):.3f}"}
                  for i, (label, row) in enumerate(zip(labels, matrix)) if sum(row)]
        blocks += [("h", "Species classification (held-out test chromosomes)"),
                   ("p", f"Accuracy {accuracy:.3f} over {total} {unit}s "
                         f"(chance {1 / len(predictions):.3f})."),
                   ("svg", "confusion_matrix.svg", files["confusion_matrix.svg"]),
                   ("table", recall)]
        summary.update(accuracy=accuracy, unit=unit, n=total, labels=labels, confusion=matrix)
    if args.embeddings:
        rows = embedding_summary([Path(p) for p in args.embeddings])
        blocks += [("h", "Embeddings"), ("table", rows)]
        summary["embeddings"] = rows
    md, page = render(blocks, args.title)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, svg in files.items():
        (args.out / name).write_text(svg + "\n")
    (args.out / "report.md").write_text(md)
    (args.out / "report.html").write_text(page)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--title", default="mambadna run")
    parser.add_argument("--store", action="append", default=[], help="SPLIT=STORE_DIR")
    parser.add_argument("--pretrain-run", type=Path)
    parser.add_argument("--finetune-run", type=Path)
    parser.add_argument("--predictions", action="append", default=[], help="LABEL=TSV")
    parser.add_argument("--embeddings", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    summary = build(parser.parse_args(argv))
    if "accuracy" in summary:
        print(f"test accuracy {summary['accuracy']:.3f} over {summary['n']} {summary['unit']}s")


if __name__ == "__main__":
    main()
