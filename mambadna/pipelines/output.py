"""Where pipeline results go: output checks and atomic files (progress: mambadna.progress).

Outputs are written through ``mambadna.atomic`` (a hidden temporary file in the output's folder,
renamed into place only when complete), so an error or an interrupt never leaves a file,
half-written or not, under the final name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mambadna.atomic import atomic_file
from mambadna.errors import ConfigError, OutputExistsError

TABLE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".parquet": "parquet"}
STDOUT = "-"
"""An output named ``-`` is the standard output, as TSV; logs and progress go to stderr."""


def is_stdout(path) -> bool:
    """Whether the output ``path`` is ``-`` (the standard output)."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path) == STDOUT


def output_format(path: str | os.PathLike, formats: dict[str, str]) -> str:
    """The format named by the extension of ``path`` (case-insensitive), else ConfigError;
    ``-`` (the standard output) is TSV."""
    if is_stdout(path):
        return "tsv"
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise ConfigError(f"cannot tell the output format from the extension {suffix!r}",
                          path=path, fix=f"end the output name with one of "
                                         f"{', '.join(formats)}")
    return formats[suffix]


def write_bed(frame, path: str | os.PathLike, *, track: str, description: str,
              use_score: bool = False) -> None:
    """Write ``frame`` (BED6 columns first: chrom, start, end, name, score, strand, then any
    others) as BED to ``path``: a ``track`` line, a ``#`` line naming the columns (bedtools
    and genome browsers skip both), then tab-separated rows, coordinates 0-based half-open.
    ``path`` may be ``-`` (the standard output). use_score: browsers shade features by score.
    """
    shade = " useScore=1" if use_score else ""
    header = (f'track name="{track}" description="{description}"{shade}\n'
              f"#{chr(9).join(frame.columns)}\n")
    if is_stdout(path):
        sys.stdout.write(header)
        frame.to_csv(sys.stdout, sep="\t", header=False, index=False, na_rep=".",
                     float_format="%.6g")
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(header)
        frame.to_csv(fh, sep="\t", header=False, index=False, na_rep=".",
                     float_format="%.6g")


def write_output(target: str | os.PathLike, force: bool, write) -> None:
    """``write(path)`` into ``target`` atomically (``atomic_output``), or straight to the
    standard output when ``target`` is ``-``."""
    if is_stdout(target):
        write(target)
        return
    with atomic_output(target, force=force) as tmp:
        write(tmp)


def check_output(path: str | os.PathLike, *, force: bool) -> Path:
    """Fail early, before any work, if ``path`` cannot be written as a new file."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError("the output folder does not exist", path=parent,
                          fix=f"create it (mkdir -p {parent}) or choose another output path")
    if not os.access(parent, os.W_OK):
        raise ConfigError("the output folder is not writable", path=parent,
                          fix="choose an output path in a folder you can write")
    if path.is_dir():
        raise OutputExistsError("exists and is a folder; the output is a file", path=path,
                                fix="choose another output path")
    if path.exists() and not force:
        raise OutputExistsError("output already exists", path=path,
                                fix="pass --force to replace it (Python: force=True), or "
                                    "choose another output path")
    return path


def atomic_output(path: str | os.PathLike, *, force: bool):
    """``mambadna.atomic.atomic_file`` for a pipeline output: ``check_output`` before the work
    and again before the rename. Yields the temporary path to write."""
    return atomic_file(path, check=lambda target: check_output(target, force=force))

