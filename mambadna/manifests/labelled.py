"""Labelled files: the TSV manifest with header ``path  label  [split]`` (finetune, evaluate,
``baseline fit``; written by ``simulate`` and ``data split``). Torch-free.

Paths are relative to the TSV's folder (absolute paths are kept). ``split`` is one of train,
val, test; rows without it (or with an empty cell) go to train. Blank lines and lines starting
with ``#`` are skipped. Every problem is reported with the TSV's path and line before any
training starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mambadna.errors import FormatError, InputFileError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """One file of the manifest: where it is, its class label, its split, its TSV line."""

    path: Path
    label: str
    split: str
    line: int


def _header(fields: list[str], path: Path, line: int) -> dict[str, int]:
    columns = {name.strip().lower(): i for i, name in enumerate(fields)}
    missing = [c for c in ("path", "label") if c not in columns]
    if missing:
        raise FormatError(f"manifest header lacks column(s) {', '.join(missing)} (found: "
                          f"{', '.join(fields)})", path=path, line=line,
                          fix="start the file with a tab-separated header: path, label, split")
    return columns


def _row(fields: list[str], columns: dict[str, int], folder: Path, path: Path,
         line: int) -> ManifestRow:
    if len(fields) < len(columns):
        fields = fields + [""] * (len(columns) - len(fields))
    if len(fields) > len(columns):
        raise FormatError(f"{len(fields)} tab-separated fields, the header has "
                          f"{len(columns)}", path=path, line=line,
                          fix="separate columns with single tabs; no tabs inside cells")
    file, label = fields[columns["path"]].strip(), fields[columns["label"]].strip()
    split = fields[columns["split"]].strip().lower() if "split" in columns else ""
    if not file or not label:
        raise FormatError("empty path or label", path=path, line=line,
                          fix="give every row a file path and a class label")
    split = split or "train"
    if split not in SPLITS:
        raise FormatError(f"split {split!r} is not one of {', '.join(SPLITS)}", path=path,
                          line=line, fix="use train, val or test (or leave it empty: train)")
    target = Path(os.path.expanduser(file))
    target = target if target.is_absolute() else folder / target
    if not target.is_file():
        raise InputFileError(f"file {file!r} ({target}) does not exist or is not a file",
                             path=path, line=line,
                             fix="fix the path (relative paths start at the manifest's folder)")
    return ManifestRow(target, label, split, line)


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Rows of a manifest TSV; FormatError / InputFileError naming the line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("manifest not found", path=path,
                             fix="pass a TSV with columns path, label[, split]")
    rows: list[ManifestRow] = []
    columns: dict[str, int] | None = None
    seen: dict[Path, int] = {}
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            text = text.rstrip("\r\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            fields = text.split("\t")
            if columns is None:
                columns = _header(fields, path, number)
                continue
            row = _row(fields, columns, path.parent, path, number)
            key = row.path.resolve()
            if key in seen:
                raise FormatError(f"{row.path} is listed twice (first on line {seen[key]}): "
                                  "one file can have one label and one split", path=path,
                                  line=number, fix="list each file once; cut per-split files "
                                  "with `mambadna data split`")
            seen[key] = number
            rows.append(row)
    if not rows:
        raise FormatError("manifest lists no files", path=path,
                          fix="add rows: path<TAB>label<TAB>split")
    return rows


def labels_in_order(rows: list[ManifestRow]) -> list[str]:
    """Class labels in order of first appearance among train rows."""
    out: list[str] = []
    for row in rows:
        if row.split == "train" and row.label not in out:
            out.append(row.label)
    return out
