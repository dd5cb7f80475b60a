"""Check sequence files record by record and summarise them (``mambadna validate``).

Every record is read and encoded under the same policies as ``tokenize``, so a file that
validates also tokenizes. By default the first problem stops the check; with ``collect_all``
every problem is collected (up to ``max_problems`` per file), except that a broken structure
(binary data, corrupt gzip, a FASTQ out of step) still ends the file it is in.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mambadna.alphabet import IUPAC_AMBIGUITY, VOCAB_SIZE, A, C, G, T, encode
from mambadna.alphabet import N as N_TOKEN
from mambadna.errors import AlphabetError, MambaDNAError
from mambadna.io import ReadOptions, locate, read_records
from mambadna.io.files import check_path
from mambadna.io.records import Record
from mambadna.io.stdin import check_stdin
from mambadna.progress import bar

_LOWERCASE = bytes(range(ord("a"), ord("z") + 1))
_BASES = b"ACGTNacgtn"


@dataclass
class FileSummary:
    """What validate found in one file. Fractions are NaN when undefined (no bases)."""

    path: str
    format: str = "?"
    records: int = 0
    bases: int = 0
    n_count: int = 0
    gc_count: int = 0
    acgt_count: int = 0
    lowercase: int = 0
    problems: list[MambaDNAError] = field(default_factory=list)
    truncated_problems: int = 0  # problems beyond max_problems, counted but not kept

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_fraction(self) -> float:
        return self.n_count / self.bases if self.bases else float("nan")

    @property
    def gc(self) -> float:
        return self.gc_count / self.acgt_count if self.acgt_count else float("nan")

    @property
    def lowercase_fraction(self) -> float:
        return self.lowercase / self.bases if self.bases else float("nan")

    def line(self) -> str:
        """One line: path, format, records, bases, N fraction, GC, lowercase fraction."""
        count = len(self.problems) + self.truncated_problems
        status = "ok" if self.ok else f"{count} problem{'' if count == 1 else 's'}"
        return (f"{self.path}\t{self.format}\trecords={self.records}\tbases={self.bases}\t"
                f"N={self.n_fraction:.4f}\tGC={self.gc:.4f}\t"
                f"lowercase={self.lowercase_fraction:.4f}\t{status}")


class _Collector:
    """Receives problems; raises _Stop when the check must end."""

    def __init__(self, summary: FileSummary, collect_all: bool, max_problems: int) -> None:
        self.summary, self.collect_all, self.max_problems = summary, collect_all, max_problems

    def __call__(self, err: MambaDNAError) -> None:
        if len(self.summary.problems) < self.max_problems:
            self.summary.problems.append(err)
        else:
            self.summary.truncated_problems += 1
        if not self.collect_all:
            raise _Stop


class _Stop(Exception):
    pass


def _invalid_count(sequence: bytes, on_invalid: str) -> int:
    allowed = _BASES + (IUPAC_AMBIGUITY + IUPAC_AMBIGUITY.lower() if on_invalid == "N" else b"")
    return len(sequence.translate(None, allowed))


def _add_record(summary: FileSummary, record: Record, report: _Collector, on_invalid: str,
                on_unknown: str) -> None:
    try:
        tokens = encode(record.sequence, on_invalid=on_invalid, on_unknown=on_unknown)
    except AlphabetError as err:
        bad = _invalid_count(record.sequence, on_invalid)
        if bad > 1:
            err.message += f" (and {bad - 1} more invalid characters in this record)"
        report(locate(err, record))  # raises _Stop unless collecting
        tokens = encode(record.sequence, on_invalid="N", on_unknown="N")
    counts = np.bincount(tokens, minlength=VOCAB_SIZE)
    summary.records += 1
    summary.bases += len(tokens)
    summary.n_count += int(counts[N_TOKEN])
    summary.gc_count += int(counts[C] + counts[G])
    summary.acgt_count += int(counts[A] + counts[C] + counts[G] + counts[T])
    summary.lowercase += len(record.sequence) - len(record.sequence.translate(None, _LOWERCASE))


def validate_file(
    path: str | os.PathLike,
    options: ReadOptions | None = None,
    *,
    collect_all: bool = False,
    max_problems: int = 1000,
    progress: bool | None = None,
    **read_opts,
) -> FileSummary:
    """Read and encode every record of ``path``; return a FileSummary (problems included).

    options / read_opts: how to read and encode (mambadna.io.ReadOptions and its fields).
    Never raises for problems of the file itself: they end up in ``summary.problems``.
    progress: a bar of bases on stderr (None: when stderr is a terminal; mambadna.progress).
    """
    options = ReadOptions.of(options, **read_opts)
    summary = FileSummary(os.fspath(path))
    report = _Collector(summary, collect_all, max_problems)
    try:
        check_path(path)
        summary.format = options.format_of(path)
        records = read_records(path, dataclasses.replace(options, fmt=summary.format),
                               on_problem=report)
        with bar(f"validate {Path(path).name}", enabled=progress) as shown:
            for record in records:
                _add_record(summary, record, report, options.on_invalid, options.on_unknown)
                shown.update(len(record.sequence))
    except _Stop:
        pass
    except MambaDNAError as err:  # fatal for this file: structure broken or unreadable
        try:
            report(err)
        except _Stop:
            pass
    return summary


def validate(paths: Sequence[str | os.PathLike], options: ReadOptions | None = None, *,
             collect_all: bool = False, progress: bool | None = None,
             **read_opts) -> list[FileSummary]:
    """validate_file for each path; without collect_all, stop after the first bad file.
    ``-`` is the standard input."""
    options = ReadOptions.of(options, **read_opts)
    check_stdin(paths, regions=bool(options.region))
    summaries = []
    for path in paths:
        summaries.append(validate_file(path, options, collect_all=collect_all,
                                       progress=progress))
        if not collect_all and not summaries[-1].ok:
            break
    return summaries
