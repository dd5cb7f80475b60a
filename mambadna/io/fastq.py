"""FASTQ reader (plain, gzip or bgzip): four-line records and the older multi-line layout.

Multi-line FASTQ is read the way the format's reference parsers do: sequence lines up to the
'+' line, then quality lines until the quality is as long as the sequence (a quality line may
start with '@', so '@' cannot end a record).

Two parsers give the same records and errors. The fast one takes a block of lines at a time
and checks the four-line layout over the whole block with C-level list and bytes operations
(headers start with '@', '+' lines bare or repeating the header, sequence and quality of equal
length, Phred+33 qualities), so Python runs only a few steps per read. Any block that is not
plain four-line FASTQ (multi-line records, CRLF, blank lines, a broken record) is read from its
first line on by the line-by-line parser, which names the problem, record and line.
pysam.FastxFile (htslib's kseq) was measured as the fast path and not used: it skips lines it
does not expect between records and ignores what the '+' line says, so errors would go unseen
(benchmarks/readers.py times both).

Where the small C extension ``_fastq`` was built at install (``setup.py``; MAMBADNA_FASTQ_C=0
turns it off), it does the fast parser's work on each block's bytes in one pass, with the same
checks and the same fallback (``_compiled_batches``); the Python block parser stays the
fallback where it was not built.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mambadna.errors import FormatError
from mambadna.io.fasta import OnProblem, _raise
from mambadna.io.files import BLOCK_SIZE, check_text, head, read_blocks
from mambadna.io.records import Record

try:
    import mambadna.io._fastq as _fastq
except ImportError:  # built at install when a C compiler is present (setup.py)
    _fastq = None

# Phred+33 qualities are the printable characters '!' (0) to '~' (93).
_QUALITY_CHARS = bytes(range(33, 127))
# Headers of printable ASCII, space and tab split into name and description by one regex with
# the same result as the line-by-line parser's str.strip and str.split (whose other whitespace
# characters, like \x1c or U+00A0, cannot occur in such headers).
_PLAIN_HEADER_CHARS = _QUALITY_CHARS + b" \t\n"  # "\n": between the headers of a block
_NAME = re.compile(r"^@[ \t]*([^ \t\n]+)", re.MULTILINE)


class Batch(NamedTuple):
    """Consecutive FASTQ records, column by column; record i's header is on line
    ``first_line + 4 * i`` (a batch from the line-by-line parser holds one record).
    Descriptions are split from ``headers`` only when asked for (tokenizing needs none)."""

    names: list[str]
    descriptions: list[str] | None
    sequences: list[bytes]
    qualities: list[bytes]
    first_line: int
    headers: list[bytes] | None = None

    def description_list(self) -> list[str]:
        if self.descriptions is not None:
            return self.descriptions
        return [_description(header) for header in self.headers or ()]

    def records(self, source: str) -> Iterator[Record]:
        line = self.first_line
        for name, description, sequence, quality in zip(
                self.names, self.description_list(), self.sequences, self.qualities):
            yield Record(name, sequence, description, quality, source, line)
            line += 4


class _Lines:
    """Line iterator that knows the current 1-based line number."""

    def __init__(self, lines: Iterable[bytes], number: int = 0) -> None:
        self._it = iter(lines)
        self.number = number

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
    source = os.fspath(path)
    for batch in read_fastq_batches(path, block_size=block_size, on_problem=on_problem):
        yield from batch.records(source)


def read_fastq_batches(path: str | os.PathLike, *, block_size: int = BLOCK_SIZE,
                       on_problem: OnProblem | None = None) -> Iterator[Batch]:
    """The records of a FASTQ file as Batches (read_fastq's records, column by column: for
    callers that need no Record object per read, like tokenizing)."""
    path = Path(path)
    check_text(path, head(path))
    report = on_problem or _raise
    blocks = read_blocks(path, block_size)
    if _fastq is not None and os.environ.get("MAMBADNA_FASTQ_C", "1") != "0":
        yield from _compiled_batches(path, iter(blocks), report)
        return
    pending: list[bytes] = []  # complete lines not yet parsed; pending[0] is on line `line`
    carry, line, seen = b"", 1, 0
    for block in blocks:
        parts = (carry + block).split(b"\n")
        carry = parts.pop()
        pending += parts
        usable = len(pending) // 4 * 4
        batch = None if b"\r" in block else _four_line_batch(pending[:usable], line)
        if batch is None:
            rest = itertools.chain(map(_no_cr, pending), _lines_after(carry, blocks))
            yield from _exact(path, _Lines(rest, line - 1), report, seen)
            return
        if usable:
            yield batch
        pending, line, seen = pending[usable:], line + usable, seen + len(batch.names)
    tail = pending + ([carry] if carry else [])
    batch = _four_line_batch(tail, line) if len(tail) % 4 == 0 else None
    if batch is None or not (seen or tail):
        yield from _exact(path, _Lines(tail, line - 1), report, seen)
    elif tail:
        yield batch


def _compiled_batches(path: Path, blocks: Iterator[bytes], report: OnProblem) -> Iterator[Batch]:
    """read_fastq_batches through the C parser: whole records of each buffer (the last one's
    unfinished record carried to the next), and the line-by-line parser from a buffer's first
    line on as soon as the C parser finds something it does not accept."""
    carry, line, seen = b"", 1, 0
    while True:
        block = next(blocks, None)
        final = block is None
        buffer = carry if final else carry + block
        parsed = _fastq.parse(buffer, final)
        batch = None if parsed is None else _compiled_batch(parsed, line)
        if batch is None or (final and not (seen or batch.sequences)):
            lines = _lines_after(b"", itertools.chain([buffer], () if final else blocks))
            yield from _exact(path, _Lines(lines, line - 1), report, seen)
            return
        n = len(batch.sequences)
        if n:
            yield batch
        if final:
            return
        carry, line, seen = buffer[parsed[0]:], line + 4 * n, seen + n


def _compiled_batch(parsed: tuple, first_line: int) -> Batch | None:
    """A Batch from the C parser's columns (None: a header the line-by-line parser reports)."""
    _, names, headers, sequences, qualities, plain = parsed
    if not sequences:
        return Batch([], [], [], [], first_line)
    if plain:
        return Batch(names, None, sequences, qualities, first_line, headers)
    return _split_headers(headers, sequences, qualities, first_line)


def _no_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


def _lines_after(carry: bytes, blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The remaining lines (line ends removed, as iter_lines does) from a partial line on."""
    for block in blocks:
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        yield from map(_no_cr, lines)
    if carry:
        yield _no_cr(carry)


def _four_line_batch(lines: list[bytes], first_line: int) -> Batch | None:
    """``lines`` (a multiple of 4) as a Batch, or None unless every record in them is plain
    four-line FASTQ with nothing for the line-by-line parser to report."""
    heads, sequences, pluses, qualities = lines[0::4], lines[1::4], lines[2::4], lines[3::4]
    n = len(heads)
    lengths = list(map(len, sequences))
    if ([h[:1] for h in heads].count(b"@") != n or [p[:1] for p in pluses].count(b"+") != n
            or b"+" in [s[:1] for s in sequences] or 0 in lengths
            or lengths != list(map(len, qualities)) or not _phred33(b"".join(qualities))):
        return None
    if pluses.count(b"+") != n and any(p != b"+" and p[1:] != h[1:]
                                       for p, h in zip(pluses, heads)):
        return None  # a '+' line that does not simply repeat its header: checked line by line
    if not n:
        return Batch([], [], [], [], first_line)
    joined = b"\n".join(heads)
    if joined.translate(None, _PLAIN_HEADER_CHARS):
        return _split_headers(heads, sequences, qualities, first_line)
    names = _NAME.findall(joined.decode("ascii"))
    if len(names) != n:
        return None  # a header without a name: reported line by line
    return Batch(names, None, sequences, qualities, first_line, heads)


def _phred33(qualities: bytes) -> bool:
    """Every byte in '!'..'~'. uint8 arithmetic wraps, so one comparison checks both ends."""
    codes = np.frombuffer(qualities, dtype=np.uint8)
    return not bool(((codes - np.uint8(33)) > 93).any())


def _description(header: bytes) -> str:
    """The description of a header line, split as _read_record does."""
    fields = header[1:].decode("utf-8", "replace").strip().split(None, 1)
    return fields[1].strip() if len(fields) > 1 else ""


def _split_headers(heads: list[bytes], sequences: list[bytes], qualities: list[bytes],
                   first_line: int) -> Batch | None:
    """Headers with other bytes (UTF-8 names, control characters), split one by one exactly
    as _read_record does."""
    names, descriptions = [], []
    for header in heads:
        fields = header[1:].decode("utf-8", "replace").strip().split(None, 1)
        if not fields:
            return None
        names.append(fields[0])
        descriptions.append(fields[1].strip() if len(fields) > 1 else "")
    return Batch(names, descriptions, sequences, qualities, first_line)


def _exact(path: Path, lines: _Lines, report: OnProblem, seen: int) -> Iterator[Batch]:
    """The line-by-line parser, from ``lines`` on (``seen`` records came before them)."""
    source = os.fspath(path)
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
            yield Batch([record.name], [record.description], [record.sequence],
                        [record.quality], record.line)


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
