"""Streaming FASTA reader: plain, gzip or bgzip; multi-line records, CRLF, blank lines.

Speed matters (tokenize reads genomes at hundreds of MB/s on one core), so the parser works on
big blocks with bytes methods and never loops over lines in Python: it finds headers with
``find(b">")`` (a memchr), strips line breaks with ``bytes.translate`` and joins the pieces
of a record once. Line numbers come for free: the number of newlines removed from a piece is the
number of lines it spans.

Whitespace inside sequence lines (spaces, tabs, CR) is dropped, as Biopython does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mambadna.errors import FormatError, MambaDNAError
from mambadna.io.files import BLOCK_SIZE, check_text, iter_lines, read_blocks
from mambadna.io.records import Record

WHITESPACE = b" \t\r\n\v\f"
_OTHER_WHITESPACE = (b"\r", b" ", b"\t", b"\v", b"\f")
# In a translation table (read_fasta(table=...)): bytes to drop (whitespace) and to reject.
DROP, REJECT = b"\xfe", b"\xff"

OnProblem = Callable[[MambaDNAError], None]


def _raise(err: MambaDNAError) -> None:
    raise err


class _FastaParser:
    """State of one pass over one file; ``records()`` yields Records."""

    def __init__(self, path: Path, block_size: int, on_problem: OnProblem | None,
                 table: bytes | None = None) -> None:
        self.path = path
        self.table = table
        self.source = os.fspath(path)
        self.block_size = block_size
        self.report = on_problem or _raise
        self.seen_header = False
        self.name: str | None = None  # None: outside a (valid) record
        self.description = ""
        self.line = 0
        self.parts: list[bytes] = []

    # -- one block ---------------------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        lines_before = 0  # newlines in the blocks already done
        carry = b""  # a header line cut by the end of the previous block
        at_line_start = True
        for index, block in enumerate(read_blocks(self.path, self.block_size)):
            if index == 0:
                check_text(self.path, block)
            self._check_nul(block, lines_before)
            if carry:
                block, carry, at_line_start = carry + block, b"", True
            pos, newlines = 0, 0
            while True:
                h = _next_header(block, pos, at_line_start)
                end = len(block) if h < 0 else h
                if end > pos:
                    newlines += self._sequence(block, pos, end, lines_before + newlines + 1)
                if h < 0:
                    break
                eol = block.find(b"\n", h)
                if eol < 0:
                    carry = block[h:]
                    break
                record = self._finish()
                if record is not None:
                    yield record
                self._header(block[h:eol], lines_before + newlines + 1)
                newlines += 1
                pos = eol + 1
            lines_before += newlines
            at_line_start = block.endswith(b"\n")
        yield from self._end(carry, lines_before + 1)

    def _end(self, carry: bytes, line: int) -> Iterator[Record]:
        if carry:  # a header on the last line, without a newline
            record = self._finish()
            if record is not None:
                yield record
            self._header(carry, line)
        record = self._finish()
        if record is not None:
            yield record
        if not self.seen_header:
            self.report(FormatError("no FASTA header ('>name') in the file", path=self.path,
                                    fix="a FASTA record starts with a line '>name'"))

    def _check_nul(self, block: bytes, lines_before: int) -> None:
        at = block.find(b"\0")
        if at >= 0:
            raise FormatError("binary data (NUL byte): not a FASTA text file", path=self.path,
                              line=lines_before + block.count(b"\n", 0, at) + 1,
                              fix="pass a FASTA file (plain, gzip or bgzip)")

    # -- pieces of a record --------------------------------------------------------------------

    def _sequence(self, block: bytes, start: int, end: int, first_line: int) -> int:
        """Add block[start:end] to the current record; return how many newlines it held."""
        piece = block if start == 0 and end == len(block) else block[start:end]
        clean = piece.translate(self.table, b"\n")
        newlines = len(piece) - len(clean)
        if self.table is not None:
            if DROP in clean:
                clean = clean.translate(None, DROP)
        elif any(ws in clean for ws in _OTHER_WHITESPACE):
            clean = clean.translate(None, WHITESPACE)
        if not clean:
            return newlines
        if self.name is not None:
            self.parts.append(clean)
        elif not self.seen_header:
            offset = len(piece) - len(piece.lstrip(WHITESPACE))
            self.report(FormatError(
                "text before the first FASTA header", path=self.path,
                line=first_line + piece.count(b"\n", 0, offset),
                fix="a FASTA file must start with a header line '>name'; remove the text "
                    "above it"))
            self.seen_header = True  # report the stray text once
        return newlines

    def _header(self, raw: bytes, line: int) -> None:
        self.seen_header = True
        self.name, self.line, self.parts = None, line, []
        try:
            title = raw[1:].decode("utf-8").strip()
        except UnicodeDecodeError:
            self.report(FormatError("header is not UTF-8 text", path=self.path, line=line,
                                    fix="fix the header line or re-create the file"))
            return
        fields = title.split(None, 1)
        if not fields:
            self.report(FormatError("header without a name ('>' alone)", path=self.path,
                                    line=line, fix="give the record a name: '>name'"))
            return
        self.name = fields[0]
        self.description = fields[1].strip() if len(fields) > 1 else ""

    def _finish(self) -> Record | None:
        """The record in progress, if any and valid; resets the state."""
        name, parts = self.name, self.parts
        self.name, self.parts = None, []
        if name is None:
            return None
        sequence = parts[0] if len(parts) == 1 else b"".join(parts)
        if not sequence:
            self.report(FormatError("record has no sequence", path=self.path, record=name,
                                    line=self.line,
                                    fix="remove the empty record or add its sequence"))
            return None
        return Record(name, sequence, self.description, None, self.source, self.line)


def _next_header(block: bytes, pos: int, at_line_start: bool) -> int:
    """Offset of the next '>' at the start of a line in block[pos:], or -1."""
    i = block.find(b">", pos)
    while i >= 0:
        if (i == 0 and at_line_start) or (i > 0 and block[i - 1] == 10):
            return i
        i = block.find(b">", i + 1)
    return -1


def read_fasta(path: str | os.PathLike, *, block_size: int = BLOCK_SIZE,
               on_problem: OnProblem | None = None, table: bytes | None = None,
               ) -> Iterator[Record]:
    """Yield the records of a FASTA file (plain, gzip or bgzip; detected by content).

    on_problem: called with each recoverable problem (a header without a name, a record without
        sequence, text before the first header) and the offending record is skipped; None (the
        default) raises it. Binary data and corrupt gzip always raise.
    table: a 256-byte bytes.translate table applied to the sequence while reading, so that
        ``Record.sequence`` holds token ids, one pass fewer than encoding afterwards. It must
        map whitespace other than LF to DROP (dropped) and may map bytes to REJECT (left in
        for the caller to find). See mambadna.io.read_tokens.
    """
    return _FastaParser(Path(path), block_size, on_problem, table).records()


def sequence_line(path: str | os.PathLike, header_line: int, position: int,
                  stop: bytes = b">") -> int | None:
    """The 1-based line holding base ``position`` (0-based) of the record whose header is on
    ``header_line``; None if not found before a line starting with ``stop`` (the next FASTA
    header; b"+" for FASTQ). Re-reads the file: meant for error messages only."""
    seen = 0
    for number, line in enumerate(iter_lines(Path(path)), start=1):
        if number <= header_line:
            continue
        if line.startswith(stop):
            return None
        seen += len(line.translate(None, WHITESPACE))
        if seen > position:
            return number
    return None
