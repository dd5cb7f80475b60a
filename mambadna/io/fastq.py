"""FASTQ reader (plain, gzip or bgzip): four-line records and the older multi-line layout.

Multi-line FASTQ is read the way the format's reference parsers do: sequence lines up to the
'+' line, then quality lines until the quality is as long as the sequence (a quality line may
start with '@', so '@' cannot end a record).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from mambadna.errors import FormatError
from mambadna.io.fasta import OnProblem, _raise
from mambadna.io.files import BLOCK_SIZE, check_text, head, iter_lines
from mambadna.io.records import Record

# Phred+33 qualities are the printable characters '!' (0) to '~' (93).
_QUALITY_CHARS = bytes(range(33, 127))


class _Lines:
    """Line iterator that knows the current 1-based line number."""

    def __init__(self, path: Path, block_size: int) -> None:
        self._it = iter_lines(path, block_size)
        self.number = 0

    def next(self) -> bytes | None:
        line = next(self._it, None)
        if line is not None:
            self.number += 1
        return line


def read_fastq(path: str | os.PathLike, *, block_size: int = BLOCK_SIZE,
               on_problem: OnProblem | None = None) -> Iterator[Record]:
    """Yield the records of a FASTQ file; quality is kept as Phred+33 bytes.

    on_problem: called with recoverable problems (a header without a name, a record without
        sequence, a '+' line naming another record, bad quality characters), skipping that
        record; None raises. A broken structure (quality length != sequence length, a missing
        '@' or '+' line, a file ending inside a record) always raises: what follows cannot be
        trusted.
    """
    path = Path(path)
    check_text(path, head(path))
    report = on_problem or _raise
    lines = _Lines(path, block_size)
    source = os.fspath(path)
    seen = 0
    while True:
        header = lines.next()
        while header is not None and not header.strip():
            header = lines.next()  # blank lines between records
        if header is None:
            if not seen:
                raise FormatError("no FASTQ records (only blank lines)", path=path)
            return
        seen += 1
        record = _read_record(path, source, header, lines, report)
        if record is not None:
            yield record


def _read_record(path: Path, source: str, header: bytes, lines: _Lines,
                 report: OnProblem) -> Record | None:
    line = lines.number
    if not header.startswith(b"@"):
        raise FormatError(f"expected a FASTQ header '@name', found {header[:30]!r}",
                          path=path, line=line,
                          fix="FASTQ records are '@name', sequence, '+', quality lines")
    title = header[1:].decode("utf-8", "replace").strip()
    fields = title.split(None, 1)
    name = fields[0] if fields else None
    sequence_lines = []
    while True:
        text = lines.next()
        if text is None:
            raise FormatError("file ends inside a record (no '+' line)", path=path,
                              record=name, line=line, fix=_TRUNCATED_FIX)
        if text.startswith(b"+"):
            break
        if text.startswith(b"@") and sequence_lines:
            # no base is '@': the next record's header came before this record's '+' line
            raise FormatError(f"record has no '+' line: the next header ({text[:30]!r}, line "
                              f"{lines.number}) comes before it", path=path, record=name,
                              line=line, fix="each FASTQ record is 4 parts: '@name', "
                                             "sequence, '+', quality; add the '+' line")
        sequence_lines.append(text)
    plus = text[1:].decode("utf-8", "replace").strip()
    sequence = b"".join(sequence_lines)
    quality = _read_quality(path, name, line, len(sequence), lines)
    if name is None:
        report(FormatError("header without a name ('@' alone)", path=path, line=line,
                           fix="give the record a name: '@name'"))
        return None
    if plus and plus != title and plus.split(None, 1)[0] != name:
        report(FormatError(f"the '+' line names {plus!r}, not the record", path=path,
                           record=name, line=lines.number - 1,
                           fix="leave the '+' line empty or repeat the header"))
        return None
    if not sequence:
        report(FormatError("record has no sequence", path=path, record=name, line=line,
                           fix="remove the empty record"))
        return None
    if quality.translate(None, _QUALITY_CHARS):
        report(FormatError("quality holds characters outside '!'..'~' (Phred+33)",
                           path=path, record=name, line=line,
                           fix="convert old Phred+64 files, e.g. `seqtk seq -VQ64`"))
        return None
    description = fields[1].strip() if len(fields) > 1 else ""
    return Record(name, sequence, description, quality, source, line)


def _read_quality(path: Path, name: str | None, line: int, length: int,
                  lines: _Lines) -> bytes:
    parts: list[bytes] = []
    have = 0
    while have < length:
        text = lines.next()
        if text is None:
            raise FormatError(f"file ends inside a record: quality has {have} of {length} "
                              "characters", path=path, record=name, line=line,
                              fix=_TRUNCATED_FIX)
        parts.append(text)
        have += len(text)
    if have != length:
        # A short 4-line quality swallows the next header: report the quality line itself.
        short = len(parts) == 2 and parts[1].startswith(b"@")
        raise FormatError(
            f"quality length {len(parts[0]) if short else have} != sequence length {length}",
            path=path, record=name, line=line,
            fix="each quality line must have one character per base")
    return b"".join(parts)


_TRUNCATED_FIX = ("the file is truncated: copy or download it again (for gzip, `gzip -t FILE` "
                  "checks it)")
