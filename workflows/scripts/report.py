"""Build the workflow report: training curves, confusion matrix, data and embedding summaries.

Writes ``report.md`` and ``report.html`` (plots inline as SVG) plus one
``<run>_<panel>_curves.svg`` per run and panel (loss, accuracy), ``confusion_matrix.svg`` and
``summary.json`` into ``--out``. Reads only the files the ``mambadna`` commands write
(metrics.csv, predictions TSV, token-store index.parquet, embeddings Parquet); the figures are
drawn by ``mambadna.plots`` (matplotlib, Agg), the same ones ``mambadna plot-run`` draws.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import pandas as pd

from mambadna.plots import (
    confusion_figure,
    last_values,
    read_metrics,
    save,
    training_figure,
    training_series,
)

# --- figures (mambadna.plots) ------------------------------------------------------------------

def svg_text(path: Path) -> str:
    """An SVG file's ``<svg>`` element (without the XML prolog), for inlining in HTML."""
    text = path.read_text()
    return text[text.index("<svg"):]


# --- reading the runs ---------------------------------------------------------------------------


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


def _curves(blocks: list, figures: dict, name: str, run: Path | None) -> None:
    if run is None:
        return
    groups = training_series(read_metrics(run))
    blocks.append(("h", f"{name.capitalize()} ({run})"))
    if not any(groups.values()):
        blocks.append(("p", "No metrics were logged (the run was shorter than --log-every)."))
    for group, series in groups.items():
        if not series:
            continue
        svg_name = f"{name}_{group.replace(' ', '_')}_curves.svg"
        figures[svg_name] = training_figure(groups, [group], f"{name}: {group}")
        blocks.append(("svg", svg_name))
        blocks.append(("table", last_values(series)))


def build(args: argparse.Namespace) -> dict:
    """Assemble the report; returns the summary written to summary.json."""
    blocks: list[tuple] = []
    figures: dict[str, object] = {}  # file name -> matplotlib Figure
    summary: dict = {"run": args.title}
    if args.store:
        stores = dict(item.split("=", 1) for item in args.store)
        rows = store_summary({k: Path(v) for k, v in stores.items()})
        blocks += [("h", "Data (token stores)"), ("table", rows)]
        summary["data"] = rows
    _curves(blocks, figures, "pretraining", args.pretrain_run)
    _curves(blocks, figures, "finetuning", args.finetune_run)
    if args.predictions:
        predictions = {k: Path(v) for k, v in (i.split("=", 1) for i in args.predictions)}
        labels, matrix, unit = confusion(predictions)
        total = sum(map(sum, matrix))
        correct = sum(matrix[i][i] for i in range(len(predictions)))
        accuracy = correct / total if total else float("nan")
        figures["confusion_matrix.svg"] = confusion_figure(labels, matrix,
                                                           f"test set, per {unit}")
        recall = [{"label": label, f"{unit}s": sum(row),
                   "recall": f"{row[i] / max(1, sum(row)):.3f}"}
                  for i, (label, row) in enumerate(zip(labels, matrix)) if sum(row)]
        blocks += [("h", "Species classification (held-out test chromosomes)"),
                   ("p", f"Accuracy {accuracy:.3f} over {total} {unit}s "
                         f"(chance {1 / len(predictions):.3f})."),
                   ("svg", "confusion_matrix.svg"), ("table", recall)]
        summary.update(accuracy=accuracy, unit=unit, n=total, labels=labels, confusion=matrix)
    if args.embeddings:
        rows = embedding_summary([Path(p) for p in args.embeddings])
        blocks += [("h", "Embeddings"), ("table", rows)]
        summary["embeddings"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        save(fig, args.out / name)
    blocks = [(*block, svg_text(args.out / block[1])) if block[0] == "svg" else block
              for block in blocks]
    md, page = render(blocks, args.title)
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
