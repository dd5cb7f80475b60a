"""The block-at-a-time FASTQ parsers (the compiled one, where it was built, and the Python one)
give exactly what the line-by-line parser gives: the same records (names, descriptions,
sequences, qualities, lines) and the same errors (message, record, line), whatever the file
holds and however it is cut into blocks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambadna.alphabet import encode
from mambadna.errors import AlphabetError, DuplicateRecordError, FormatError, MambaDNAError
from mambadna.io import fastq, read_tokens
from mambadna.io.fasta import _raise
from mambadna.io.fastq import _exact, _Lines, read_fastq
from mambadna.io.files import check_text, head, iter_lines


def _line_by_line(path, on_problem=None):
    """The reference: the line-by-line parser over the whole file."""
    check_text(path, head(path))
    for batch in _exact(path, _Lines(iter_lines(path)), on_problem or _raise, 0):
        yield from batch.records(os.fspath(path))


PARSERS = [pytest.param("compiled", marks=pytest.mark.skipif(
    fastq._fastq is None, reason="the C FASTQ parser was not built")), "python"]


def _parser(name: str):
    """The block parser to use: the compiled one or the Python one (MAMBADNA_FASTQ_C=0)."""
    if name == "compiled":
        return contextlib.nullcontext()
    return mock.patch.dict(os.environ, {"MAMBADNA_FASTQ_C": "0"})


def _outcome(read, path):
    """(records, problems, final error) of one way of reading, errors as comparable tuples."""
    problems, records = [], []
    key = lambda e: (type(e).__name__, e.message, e.record, e.line)  # noqa: E731
    try:
        records.extend(read(path, problems.append))
        error = None
    except MambaDNAError as err:
        error = key(err)
    return records, [key(p) for p in problems], error


# Mostly well-formed four-line records, with pieces that break the layout in every way.
RECORD = st.builds(lambda n, s, q: b"@r%d desc\n%s\n+\n%s\n" % (n, s, q),
                   st.integers(0, 99), st.sampled_from([b"ACGT", b"ggNN", b"A"]),
                   st.sampled_from([b"IIII", b"!~#5", b"I"]))
PIECES = st.one_of(RECORD, RECORD, RECORD, st.sampled_from([
    b"\n", b"\r\n", b"@", b"+", b"+r1 desc\n", b"@r1 desc\n", b"ACG\nTA\n", b"II\n", b"@\n",
    b" \n", b"I \n", b"\t", b"+r9\n", b"@ok\nA\n+\nI\n", b"@r1\nAC\n+r1\nII\n",
    b"@r\xc3\xa9 d\xc2\xa0x\nA\n+\nI\n", b"@ \t r2 \t d  e \nA\n+\nI\n", b"@r3\x0bx\nA\n+\nI\n"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(PIECES, min_size=1, max_size=12), block=st.sampled_from([7, 64, 1 << 20]))
@pytest.mark.parametrize("parser", PARSERS)
def test_same_records_and_errors_as_the_line_by_line_parser(parser, pieces, block):
    with _parser(parser):
        _check_same_as_line_by_line(b"".join(pieces), block)


def _check_same_as_line_by_line(data: bytes, block: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "r.fq")
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            check_text(path, head(path))
        except FormatError:
            return  # not text at all: both refuse it before parsing
        fast = lambda p, report: read_fastq(p, block_size=block, on_problem=report)  # noqa: E731
        assert _outcome(fast, path) == _outcome(_line_by_line, path)
        raising = _outcome(lambda p, _: read_fastq(p, block_size=block), path)
        assert raising == _outcome(lambda p, _: _line_by_line(p), path)


@pytest.mark.parametrize("parser", PARSERS)
def test_four_line_file_with_many_blocks(parser, tmp_path, write_fastq, random_dna):
    reads = [(f"r{i}", random_dna(20 + i % 9, seed=i)) for i in range(500)]
    path = write_fastq(tmp_path / "r.fq.gz", reads, compress="gzip")
    with _parser(parser):
        records = list(read_fastq(path, block_size=1000))
    assert [(r.name, r.sequence.decode(), r.line) for r in records] == [
        (name, seq, 4 * i + 1) for i, (name, seq) in enumerate(reads)]
    assert records == list(_line_by_line(path))


def test_tokens_of_fastq_match_encode_and_name_errors(tmp_path, write_fastq):
    path = write_fastq(tmp_path / "r.fq", [("a", "ACGTn"), ("b", "RYAC"), ("c", "GG")])
    got = [(name, tokens.tolist()) for name, _, tokens in read_tokens(path)]
    assert got == [(n, encode(s).tolist()) for n, s in (("a", "ACGTn"), ("b", "RYAC"),
                                                          ("c", "GG"))]
    assert all(not t.flags.writeable for _, _, t in read_tokens(path))
    bad = write_fastq(tmp_path / "bad.fq", [("a", "ACGT"), ("b", "AC*T"), ("c", "GG")])
    seen = []
    with pytest.raises(AlphabetError) as info:
        for name, _, _ in read_tokens(bad):
            seen.append(name)
    assert seen == ["a"]  # the records before the bad one are given first
    assert (info.value.record, info.value.line, info.value.path) == ("b", 6, str(bad))
    with pytest.raises(AlphabetError):
        list(read_tokens(write_fastq(tmp_path / "iupac.fq", [("a", "ACR")]), on_invalid="error"))
    dup = write_fastq(tmp_path / "dup.fq", [("a", "AC"), ("a", "GT")])
    with pytest.raises(DuplicateRecordError, match="first seen on line 1") as info:
        list(read_tokens(dup))
    assert info.value.line == 5
    assert len(list(read_tokens(dup, allow_duplicates=True))) == 2
    assert np.array_equal(next(read_tokens(path))[2], encode("ACGTn"))
