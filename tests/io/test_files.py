"""Low-level input handling: gzip members, truncation and padding, format detection."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mambadna.errors import FormatError
from mambadna.io import files
from mambadna.io.files import compression, detect_format, read_blocks


def _members(chunks: list[bytes], level: int = 6) -> bytes:
    return b"".join(gzip.compress(c, compresslevel=level, mtime=0) for c in chunks)


def _gunzip(path, block: int, read: int) -> bytes:
    """Tiny compressed reads put member ends and magic bytes across read boundaries."""
    with open(path, "rb") as fh:
        return b"".join(files._gunzip_blocks(fh, path, block, read))


@settings(max_examples=50, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
       block=st.integers(1, 50), read=st.integers(1, 40), padding=st.integers(0, 3))
def test_multi_member_gzip_reads_back_exactly(tmp_path_factory, chunks, block, read, padding):
    path = tmp_path_factory.mktemp("gz") / "x.gz"
    path.write_bytes(_members(chunks) + b"\0" * padding)
    assert _gunzip(path, block, read) == b"".join(chunks)


def test_every_truncation_point_is_an_error(tmp_path):
    data = _members([b"ACGT" * 50, b">chr2\nGGCC\n" * 20])
    path = tmp_path / "cut.gz"
    for cut in range(3, len(data) - 1):
        if data[cut:cut + 2] == b"\x1f\x8b":
            continue  # cut exactly between two members: a valid, shorter file
        path.write_bytes(data[:cut])
        with pytest.raises(FormatError, match=r"truncated|corrupt"):
            _gunzip(path, 16, 7)


def test_corruption_and_trailing_garbage(tmp_path):
    data = bytearray(gzip.compress(b"ACGT" * 1000, mtime=0))
    data[-6] ^= 0xFF  # the CRC32 of the member
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="corrupt gzip data"):
        b"".join(read_blocks(path))
    path.write_bytes(gzip.compress(b"ACGT") + b"not gzip")
    with pytest.raises(FormatError, match="after the end of the gzip stream"):
        b"".join(read_blocks(path))


def test_huge_expansion_is_read_in_bounded_blocks(tmp_path):
    path = tmp_path / "zeros.gz"
    path.write_bytes(gzip.compress(b"N" * 5_000_000, mtime=0))
    sizes = [len(b) for b in read_blocks(path, 1 << 20)]
    assert max(sizes) <= 1 << 20 and sum(sizes) == 5_000_000


def test_compression_and_format_by_content(tmp_path, write_fasta):
    plain = write_fasta(tmp_path / "a.gz", {"x": "ACGT"})  # the name lies
    gz = write_fasta(tmp_path / "b.fa", {"x": "ACGT"}, compress="gzip")
    bgz = write_fasta(tmp_path / "c.txt", {"x": "ACGT"}, compress="bgzip")
    assert [compression(p) for p in (plain, gz, bgz)] == ["none", "gzip", "bgzip"]
    assert {detect_format(p) for p in (plain, gz, bgz)} == {"fasta"}
    sam_like = tmp_path / "s.txt"
    sam_like.write_text("@HD\tVN:1.6\n")
    assert detect_format(sam_like) == "sam"
