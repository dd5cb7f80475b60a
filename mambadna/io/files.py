"""Opening inputs: path checks, compression and format detection by content, block reading.

Formats are detected from the bytes, never from the file name: gzip and bgzip by the magic
bytes 1f 8b (bgzip is gzip with a 'BC' extra field, which matters only for random access),
BAM by 'BAM\\1' inside BGZF, CRAM by 'CRAM', text formats by their first line.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mambadna.errors import FormatError, InputFileError

FORMATS = ("fasta", "fastq", "sam", "bam", "cram")
BLOCK_SIZE = 8 << 20  # 8 MiB reads: few Python-level steps per byte, bounded memory
_SNIFF_SIZE = 64 << 10
_GZIP_MAGIC = b"\x1f\x8b"
_SAM_HEADER_TAGS = (b"@HD\t", b"@SQ\t", b"@RG\t", b"@PG\t", b"@CO\t")
# Control bytes that never occur in FASTA/FASTQ/SAM text (tab, LF, VT, FF, CR are allowed).
_BINARY_BYTES = bytes(range(0, 9)) + bytes(range(14, 32)) + b"\x7f"

_CORRUPT_GZIP_FIX = ("the file is truncated or corrupt: download or copy it again; "
                     "`gzip -t FILE` checks a gzip file")


def check_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it is a readable, non-empty regular file, else raise."""
    p = Path(path)
    if not p.exists():
        hint = f" (did you mean {p.with_suffix('')}?)" if p.suffix in (".gz", ".bgz") else ""
        raise InputFileError(f"no such file{hint}", path=p,
                             fix="check the path; inputs are files, not glob patterns")
    if p.is_dir():
        raise InputFileError("is a directory, not a sequence file", path=p,
                             fix=f"pass the files inside it, e.g. {p}/*.fa")
    if not p.is_file():
        raise InputFileError("is not a regular file (a pipe or device?)", path=p,
                             fix="write the data to a file first")
    if not os.access(p, os.R_OK):
        raise InputFileError("permission denied", path=p, fix="make the file readable")
    if p.stat().st_size == 0:
        raise FormatError("empty file: no records", path=p,
                          fix="check that the download or the command that wrote it succeeded")
    return p


def compression(path: str | os.PathLike) -> str:
    """'bgzip', 'gzip' or 'none', from the first bytes of the file."""
    with open(path, "rb") as fh:
        head = fh.read(18)
    if not head.startswith(_GZIP_MAGIC):
        return "none"
    # BGZF: FLG.FEXTRA set, XLEN=6, subfield 'BC' of length 2 (SAM spec, section 4.1).
    if len(head) >= 16 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzip"
    return "gzip"


def _open_raw(path: Path, compressed: bool) -> BinaryIO:
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def read_blocks(path: Path, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield the (decompressed) content of ``path`` in blocks; corrupt gzip -> FormatError."""
    compressed = compression(path) != "none"
    with _open_raw(path, compressed) as fh:
        while True:
            try:
                block = fh.read(block_size)
            except (EOFError, gzip.BadGzipFile, zlib.error) as err:
                raise FormatError(f"corrupt or truncated gzip data ({err})", path=path,
                                  fix=_CORRUPT_GZIP_FIX) from None
            if not block:
                return
            yield block


def iter_lines(path: Path, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield the lines of ``path`` without their line ends (LF or CRLF)."""
    carry = b""
    for block in read_blocks(path, block_size):
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if carry:
        yield carry[:-1] if carry.endswith(b"\r") else carry


def head(path: Path, size: int = _SNIFF_SIZE) -> bytes:
    """The first ``size`` decompressed bytes (fewer at the end of the file)."""
    out = b""
    for block in read_blocks(path, size):
        out += block
        if len(out) >= size:
            break
    return out[:size]


def check_text(path: Path, data: bytes) -> None:
    """Raise FormatError if ``data`` (the start of a text format) looks binary."""
    data = data[:_SNIFF_SIZE]
    if len(data.translate(None, _BINARY_BYTES)) != len(data):
        bad = next(i for i, b in enumerate(data) if b in _BINARY_BYTES)
        line = data.count(b"\n", 0, bad) + 1
        raise FormatError(f"binary data (byte 0x{data[bad]:02x}), not FASTA/FASTQ/SAM text",
                          path=path, line=line,
                          fix="pass a FASTA, FASTQ, SAM, BAM or CRAM file (compressed or not)")


def detect_format(path: str | os.PathLike) -> str:
    """One of FORMATS, detected from the file's content (compression is looked through)."""
    p = check_path(path)
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic == b"CRAM":
        return "cram"
    data = head(p)
    if magic.startswith(_GZIP_MAGIC) and data.startswith(b"BAM\x01"):
        return "bam"
    if not data.strip():
        raise FormatError("no records (the file holds only whitespace)", path=p,
                          fix="check that the command that wrote it succeeded")
    check_text(p, data)
    text = data.lstrip()
    first_line = text.split(b"\n", 1)[0]
    if text.startswith(_SAM_HEADER_TAGS):
        return "sam"
    if text.startswith(b">"):
        return "fasta"
    if text.startswith(b"@"):
        return "fastq"
    if first_line.count(b"\t") >= 10:
        return "sam"  # SAM without a header: 11 or more tab-separated columns
    if b"\n>" in data:
        return "fasta"  # with text above the first header: the reader says where
    line = data[: len(data) - len(text)].count(b"\n") + 1
    shown = first_line[:40].decode("ascii", "replace")
    raise FormatError(f"not FASTA ('>'), FASTQ ('@'), SAM, BAM or CRAM: the text starts with "
                      f"{shown!r}", path=p, line=line,
                      fix="FASTA headers start with '>'; remove any text before the first "
                          "record")
