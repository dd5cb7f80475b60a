"""GenBank and EMBL flat files (plain, gzip or bgzip), read through Biopython's ``SeqIO``.

Each record gives one Record: its accession.version as the name (``NC_001422.1``; the LOCUS or
ID name when there is no accession), the definition line as the description (as Biopython
gives it: GenBank's final period dropped), the sequence as Biopython reads it (GenBank in
capitals). Features are not read: models see bases. Biopython reports problems without line
numbers, so the line of each record's first line (LOCUS / ID) is found by one scan of the file,
and errors name the file, the record and that line.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from mambadna.errors import FormatError
from mambadna.io.files import check_text, compression, head, iter_lines
from mambadna.io.records import Record

ANNOTATED = {"genbank": (b"LOCUS", b"ORIGIN"), "embl": (b"ID   ", b"SQ   ")}
"""format -> (first line of a record, the line after which its sequence starts)."""
_FIX = {"genbank": "check the file is complete GenBank (LOCUS ... ORIGIN sequence //); "
                   "`mambadna validate FILE` lists every problem",
        "embl": "check the file is complete EMBL (ID ... SQ sequence //); "
                "`mambadna validate FILE` lists every problem"}
_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123)) + b"*-"


def record_lines(path: Path, fmt: str) -> list[int]:
    """1-based line numbers of each record's first line (LOCUS for GenBank, ID for EMBL)."""
    start = ANNOTATED[fmt][0]
    return [number for number, line in enumerate(iter_lines(path), start=1)
            if line.startswith(start)]


def _text(path: Path) -> io.TextIOBase:
    if compression(path) != "none":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_annotated(path: str | os.PathLike, fmt: str) -> Iterator[Record]:
    """Yield the records of a GenBank (fmt "genbank") or EMBL ("embl") file."""
    from Bio import SeqIO
    from Bio.Seq import UndefinedSequenceError

    path = Path(path)
    check_text(path, head(path))
    lines = record_lines(path, fmt)
    source = os.fspath(path)
    index = 0
    with _text(path) as handle:
        parsed = SeqIO.parse(handle, fmt)
        while True:
            line = lines[index] if index < len(lines) else None
            try:
                entry = next(parsed, None)
            except (OSError, EOFError, zlib.error) as err:
                raise FormatError(f"corrupt or truncated compressed data ({err})", path=path,
                                  fix="copy or download the file again; `gzip -t FILE` "
                                      "checks it") from None
            except Exception as err:  # Biopython fails on bad text in many ways
                raise FormatError(f"not valid {_NAMES[fmt]} ({type(err).__name__}: {err})",
                                  path=path, line=line, fix=_FIX[fmt]) from None
            if entry is None:
                break
            name = entry.id if entry.id and entry.id != "<unknown id>" else entry.name
            try:
                sequence = bytes(entry.seq)
            except UndefinedSequenceError:
                raise FormatError("record has no sequence (only its length or a CONTIG "
                                  "line)", path=path, record=name, line=line,
                                  fix="download the record with its sequence (GenBank "
                                      "'with sequence' / ORIGIN), or as FASTA") from None
            if not sequence:
                raise FormatError("record has no sequence", path=path, record=name, line=line,
                                  fix="download the record with its sequence, or as FASTA")
            description = "" if entry.description in ("", ".") else entry.description
            yield Record(name, sequence, description, None, source, line)
            index += 1
    if not index:
        raise FormatError(f"no {_NAMES[fmt]} records", path=path, fix=_FIX[fmt])


_NAMES = {"genbank": "GenBank", "embl": "EMBL"}


def annotated_sequence_line(path: str | os.PathLike, fmt: str, header_line: int,
                            position: int) -> int | None:
    """The 1-based line holding base ``position`` (0-based) of the record starting on
    ``header_line``: the sequence lines after ORIGIN / SQ, letters only (GenBank's and EMBL's
    position numbers and spaces are not bases). Re-reads the file: for error messages only."""
    marker = ANNOTATED[fmt][1]
    in_sequence, seen = False, 0
    for number, line in enumerate(iter_lines(Path(path)), start=1):
        if number <= header_line:
            continue
        if line.startswith(b"//"):
            return None
        if not in_sequence:
            in_sequence = line.startswith(marker)
            continue
        seen += len(line) - len(line.translate(None, _LETTERS))
        if seen > position:
            return number
    return None
