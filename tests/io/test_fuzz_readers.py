"""Fuzzing the readers: whatever bytes a file holds, reading it either gives records or raises
one of our domain errors (file, line, fix), never another exception (issue 19)."""

from __future__ import annotations

import gzip
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambadna.errors import MambaDNAError
from mambadna.io import detect_format, read_records, read_tokens
from mambadna.io.fasta import read_fasta
from mambadna.io.fastq import read_fastq

# Pieces that make the parsers take their interesting paths: headers, '+' lines, line endings
# of every kind, byte-order marks, NUL, non-ASCII, quality characters, IUPAC codes, blanks.
PIECES = [b">", b"@", b"+", b"\n", b"\r\n", b"\r", b" ", b"\t", b"ACGT", b"acgtn", b"N",
          b"RYKM", b"IIII", b"!~", b"chr1", b"r1 desc", b"\xef\xbb\xbf", b"\x00", b"\xff\xfe",
          b"\xc3\xa9", b";", b">chr1\nACGT\n", b"@r\nACGT\n+\nIIII\n", b"\n\n"]

texts = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join),
    st.binary(max_size=300),
)


def _read_all(path: str) -> None:
    for read in (lambda: list(read_records(path)),
                 lambda: list(read_tokens(path)),
                 lambda: list(read_fasta(path)),
                 lambda: list(read_fastq(path)),
                 lambda: detect_format(path)):
        try:
            read()
        except MambaDNAError:
            pass  # ours: fine; anything else fails the test


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=texts, compress=st.sampled_from(["none", "gzip", "cut gzip"]),
       suffix=st.sampled_from([".fa", ".fq", ".txt"]))
def test_any_bytes_read_or_raise_a_domain_error(data, compress, suffix):
    if compress != "none":
        data = gzip.compress(data)
        if compress == "cut gzip":
            data = data[: len(data) // 2]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "f" + suffix + (".gz" if compress != "none" else ""))
        with open(path, "wb") as handle:
            handle.write(data)
        _read_all(path)
