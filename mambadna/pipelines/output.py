"""Where pipeline results go: output checks, atomic files and a progress line on stderr.

Outputs are written through ``mambadna.atomic`` (a hidden temporary file in the output's folder,
renamed into place only when complete), so an error or an interrupt never leaves a file,
half-written or not, under the final name.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

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


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


class Progress:
    """A one-line progress display on stderr: bases done (of the total if known) and rate.

    Shown only when ``enabled`` (default: stderr is a terminal); redrawn at most every
    ``interval`` seconds.
    """

    def __init__(self, label: str, total: int | None = None, *, enabled: bool | None = None,
                 stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total = total
        self.done = 0
        self.interval = interval
        self.started = time.perf_counter()
        self._drawn = 0.0

    def update(self, bases: int, record: str = "") -> None:
        self.done += bases
        now = time.perf_counter()
        if self.enabled and now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(now, record)

    def line(self, now: float | None = None, record: str = "") -> str:
        elapsed = max((now or time.perf_counter()) - self.started, 1e-9)
        done = _si(self.done, "b")
        if self.total:
            done += f" / {_si(self.total, 'b')} ({100 * self.done / self.total:.1f}%)"
        return f"{self.label}: {done}, {_si(self.done / elapsed, 'b/s')} {record}".rstrip()

    def _draw(self, now: float, record: str) -> None:
        self.stream.write("\r" + self.line(now, record)[:120] + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter(), "done")
            self.stream.write("\n")
            self.stream.flush()
