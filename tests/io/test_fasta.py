"""FASTA reading: layouts, compression by content, block boundaries, bad input, indexed access."""

from __future__ import annotations

import gzip
import os

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mambadna.alphabet import encode
from mambadna.errors import (
    ConfigError,
    DuplicateRecordError,
    FormatError,
    IndexRequiredError,
    InputError,
    InputFileError,
)
from mambadna.io import (
    Region,
    _fasta_table,
    compression,
    detect_format,
    fetch_interval,
    read_records,
)
from mambadna.io.fasta import read_fasta, sequence_line

RECORDS = {"chr1": "ACGTACGTNNacgtaGGC", "chr2": "TTTT", "chrM": "GATTACA" * 5}


def _seqs(path, **kw):
    return {r.name: r.sequence.decode() for r in read_records(path, **kw)}


@pytest.mark.parametrize("compress", [None, "gzip", "bgzip"])
def test_plain_gzip_and_bgzip_read_the_same(tmp_path, write_fasta, compress):
    # A misleading name on purpose: formats come from the content.
    path = write_fasta(tmp_path / "genome.txt", RECORDS, compress=compress, width=7)
    assert compression(path) == (compress or "none")
    assert detect_format(path) == "fasta"
    assert _seqs(path) == RECORDS


def test_record_fields_lines_and_descriptions(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", [("chr1", "ACGTAC", "Homo sapiens chr 1"),
                                           ("chr2", "GG", "")], width=4)
    first, second = read_records(path)
    assert (first.name, first.description, first.line, first.source) == (
        "chr1", "Homo sapiens chr 1", 1, str(path))
    assert (second.name, second.sequence, second.line, second.quality) == ("chr2", b"GG", 4, None)
    assert len(first) == 6


def test_crlf_blank_lines_spaces_and_missing_final_newline(tmp_path):
    path = tmp_path / "messy.fa"
    path.write_bytes(b"\r\n\n>r1 some text\r\nAC GT\r\n\r\nac\tgt\r\n\n>r2\r\nNN\r\n>r3\nA")
    records = list(read_records(path))
    assert [(r.name, r.sequence, r.line) for r in records] == [
        ("r1", b"ACGTacgt", 3), ("r2", b"NN", 8), ("r3", b"A", 10)]
    assert records[0].description == "some text"


def test_greater_than_inside_a_line_is_not_a_header(tmp_path):
    path = tmp_path / "g.fa"
    path.write_bytes(b">a x>y\nAC>GT\n>b\nA\n")
    # '>' inside a sequence line is data (the encoder rejects it later), not a new record.
    assert [(r.name, r.sequence) for r in read_records(path)] == [("a", b"AC>GT"), ("b", b"A")]


def _reference_parse(text: bytes):
    """A slow, obviously-right parser to compare the block parser against."""
    out, name, line_no, parts = [], None, 0, []
    for number, line in enumerate(text.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if line.startswith(b">"):
            if name is not None:
                out.append((name, b"".join(parts), line_no))
            name, line_no, parts = line[1:].split()[0].decode(), number, []
        else:
            parts.append(line.strip())
    out.append((name, b"".join(parts), line_no))
    return out


@settings(max_examples=50, deadline=None)
@given(
    seqs=st.lists(st.text("ACGTNacgt", min_size=1, max_size=80), min_size=1, max_size=5),
    width=st.integers(1, 30),
    block=st.integers(1, 64),
    crlf=st.booleans(),
    blank=st.booleans(),
)
def test_block_boundaries_never_change_the_records(tmp_path_factory, seqs, width, block,
                                                   crlf, blank):
    newline = b"\r\n" if crlf else b"\n"
    lines = []
    for i, seq in enumerate(seqs):
        lines.append(f">rec{i} description {i}".encode())
        lines += [seq[j:j + width].encode() for j in range(0, len(seq), width)]
        if blank:
            lines.append(b"")
    text = newline.join(lines) + newline
    path = tmp_path_factory.mktemp("blocks") / "g.fa"
    path.write_bytes(text)
    got = [(r.name, r.sequence, r.line) for r in read_fasta(path, block_size=block)]
    assert got == _reference_parse(text)
    # The encode-while-parsing path (used by tokenize) sees the same boundaries.
    fused = read_fasta(path, block_size=block, table=_fasta_table("N", "error"))
    assert [r.sequence for r in fused] == [encode(seq).tobytes() for _, seq, _ in got]


# --- bad input: each a clear error --------------------------------------------------------


def test_nonexistent_path(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        read_records(tmp_path / "missing.fa")


def test_directory(tmp_path):
    with pytest.raises(InputFileError, match="is a directory") as info:
        read_records(tmp_path)
    assert "*.fa" in str(info.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.fa").write_bytes(b"")
    with pytest.raises(FormatError, match="empty file"):
        read_records(tmp_path / "empty.fa")


def test_empty_gzip_and_whitespace_only(tmp_path):
    (tmp_path / "empty.fa.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "blank.fa").write_bytes(b"\n\n  \n")
    for name in ("empty.fa.gz", "blank.fa"):
        with pytest.raises(FormatError, match="no records"):
            read_records(tmp_path / name)


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,  # an image
    b">chr1\nACGT\x00\x00\x00\x01\x02",  # NUL bytes after a valid start
])
def test_binary_files_are_format_errors(tmp_path, data):
    path = tmp_path / "binary.fa"
    path.write_bytes(data)
    with pytest.raises(FormatError, match="binary data"):
        list(read_records(path))


def test_nul_bytes_far_into_the_file_name_the_line(tmp_path):
    path = tmp_path / "g.fa"
    path.write_bytes(b">chr1\n" + b"ACGT\n" * 100 + b"AC\x00T\n")
    with pytest.raises(FormatError, match="NUL") as info:
        list(read_fasta(path, block_size=64))
    assert info.value.line == 102


def test_truncated_gzip(tmp_path, write_fasta, random_dna):
    full = write_fasta(tmp_path / "full.fa.gz", {"chr1": random_dna(20000)}, compress="gzip")
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(FormatError, match="truncated") as info:
        list(read_records(cut))
    assert info.value.path == str(cut) and "gzip -t" in str(info.value)


def test_text_before_the_first_header(tmp_path):
    path = tmp_path / "g.fa"
    path.write_bytes(b"\nthis is a note\n>chr1\nACGT\n")
    with pytest.raises(FormatError, match="text before the first FASTA header") as info:
        list(read_records(path))
    assert info.value.line == 2


@pytest.mark.parametrize("header", [b">", b">   ", b"> \t"])
def test_header_without_a_name(tmp_path, header):
    path = tmp_path / "g.fa"
    path.write_bytes(b">ok\nAC\n" + header + b"\nACGT\n")
    with pytest.raises(FormatError, match="header without a name") as info:
        list(read_records(path))
    assert info.value.line == 3


@pytest.mark.parametrize("text, line", [(b">a\nAC\n>empty\n>c\nGG\n", 3),
                                        (b">a\nAC\n>empty\n\n\n", 3),
                                        (b">a\nAC\n>empty", 3)])
def test_record_without_sequence(tmp_path, text, line):
    path = tmp_path / "g.fa"
    path.write_bytes(text)
    with pytest.raises(FormatError, match="no sequence") as info:
        list(read_records(path))
    assert (info.value.record, info.value.line) == ("empty", line)


def test_duplicate_names_unless_allowed(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", [("a", "AC"), ("b", "GG"), ("a", "TT")])
    with pytest.raises(DuplicateRecordError, match="first seen on line 1") as info:
        list(read_records(path))
    assert (info.value.record, info.value.line) == ("a", 5)
    assert "--allow-duplicates" in str(info.value)
    assert [r.sequence for r in read_records(path, allow_duplicates=True)] == [b"AC", b"GG", b"TT"]


def test_recoverable_problems_can_be_collected(tmp_path):
    path = tmp_path / "g.fa"
    path.write_bytes(b">a\nAC\n>\nGG\n>b\n>c\nTT\n>a\nCC\n")
    problems = []
    names = [r.name for r in read_records(path, on_problem=problems.append)]
    assert names == ["a", "c"]
    assert [(type(p), p.line) for p in problems] == [
        (FormatError, 3), (FormatError, 5), (DuplicateRecordError, 8)]


def test_sequence_line_finds_the_line_of_a_position(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", {"a": "A" * 10, "b": "C" * 25}, width=10)
    assert sequence_line(path, 3, 0) == 4
    assert sequence_line(path, 3, 19) == 5
    assert sequence_line(path, 3, 24) == 6
    assert sequence_line(path, 3, 25) is None


# --- detection -----------------------------------------------------------------------------


def test_unknown_text_is_not_guessed(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello world\nno sequences here\n")
    with pytest.raises(FormatError, match="not FASTA"):
        detect_format(path)


def test_unknown_format_name_is_a_config_error(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", RECORDS)
    with pytest.raises(ConfigError, match="unknown format"):
        read_records(path, fmt="fastx")


# --- indexed access ------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [None, "bgzip"])
def test_fetch_interval_builds_the_index(tmp_path, write_fasta, random_dna, compress):
    seq = random_dna(1000, seed=3)
    path = write_fasta(tmp_path / "g.fa", {"chr1": "A" * 5, "chr2": seq}, compress=compress)
    assert fetch_interval(path, "chr2", 100, 250) == seq[100:250].encode()
    assert os.path.exists(f"{path}.fai")
    assert fetch_interval(path, "chr2", 990, 1000) == seq[990:].encode()


def test_fetch_interval_errors(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", RECORDS)
    with pytest.raises(InputError, match="no record 'chrX'"):
        fetch_interval(path, "chrX", 0, 1)
    with pytest.raises(InputError, match="outside the record"):
        fetch_interval(path, "chr2", 2, 10)


def test_plain_gzip_has_no_random_access(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa.gz", RECORDS, compress="gzip")
    with pytest.raises(IndexRequiredError, match="plain gzip") as info:
        fetch_interval(path, "chr1", 0, 4)
    assert "bgzip" in info.value.fix and "samtools faidx" in info.value.fix
    with pytest.raises(IndexRequiredError):
        list(read_records(path, region="chr1:1-4"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unindexed_fasta_in_a_read_only_folder(tmp_path, write_fasta):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write_fasta(folder / "g.fa", RECORDS)
    folder.chmod(0o555)
    try:
        with pytest.raises(IndexRequiredError, match="not writable") as info:
            fetch_interval(path, "chr1", 0, 4)
        assert "samtools faidx" in info.value.fix
    finally:
        folder.chmod(0o755)


def test_region_queries_on_fasta(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", RECORDS, width=5)
    records = list(read_records(path, region=["chr1:3-6", "chr2", Region("chrM", 0, 7)]))
    assert [(r.name, r.sequence) for r in records] == [
        ("chr1:3-6", b"GTAC"), ("chr2", b"TTTT"), ("chrM:1-7", b"GATTACA")]
    clipped = next(read_records(path, region="chr2:3-1000"))
    assert clipped.sequence == b"TT"
    with pytest.raises(InputError, match="no record"):
        list(read_records(path, region="chr9:1-5"))


def test_region_names_with_colons_follow_samtools(tmp_path, write_fasta):
    """HLA alleles are named like 'HLA-A*01:01:01:01': the whole string names the sequence
    when the file has it; '{NAME}:START-END' takes an interval of such a sequence."""
    path = write_fasta(tmp_path / "hla.fa", [("HLA-A*01:01:01:01", "ACGTACGTAC"),
                                             ("HLA-A*01:01:01", "TTTTGGGG")], width=4)
    whole = next(read_records(path, region="HLA-A*01:01:01:01"))
    assert (whole.name, whole.sequence) == ("HLA-A*01:01:01:01", b"ACGTACGTAC")
    part = next(read_records(path, region="{HLA-A*01:01:01:01}:3-5"))
    assert (part.name, part.sequence) == ("{HLA-A*01:01:01:01}:3-5", b"GTA")
    # not a sequence name: the last ':START' is the interval, as samtools reads it
    tail = next(read_records(path, region="HLA-A*01:01:01:5"))
    assert (tail.name, tail.sequence) == ("{HLA-A*01:01:01}:5-", b"GGGG")


def test_region_parsing():
    assert Region.parse("chr1") == Region("chr1", 0, None)
    assert Region.parse("chr1:1,001-2,000") == Region("chr1", 1000, 2000)
    assert Region.parse("chr1:5") == Region("chr1", 4, None)
    assert str(Region.parse("chr1:1001-2000")) == "chr1:1001-2000"
    for bad in ("chr1:0-5", "chr1:10-5", ""):
        with pytest.raises(ConfigError):
            Region.parse(bad)


# --- misleading symptoms named by their cause ---------------------------------------------


@pytest.mark.parametrize("data, message", [
    (b">a\rACGT\rACGT\r>b\rGGGG\r", "old Mac line endings"),
    (b"\xef\xbb\xbf>a\nACGT\n", "UTF-8 byte-order mark"),
    (b"\xff\xfe>\x00a\x00", "UTF-16"),
])
def test_cr_only_and_byte_order_marks_are_named(tmp_path, data, message):
    from mambadna.cli import cli

    path = tmp_path / "g.fa"
    path.write_bytes(data)
    for read in (lambda: list(read_records(path)), lambda: list(read_fasta(path))):
        with pytest.raises(FormatError, match=message) as info:
            read()
        assert info.value.path == str(path) and info.value.line == 1 and info.value.fix
    result = CliRunner().invoke(cli, ["tokenize", str(path), "-o", str(tmp_path / "s")])
    assert result.exit_code == 1 and message in result.output


def test_a_reversed_region_names_the_file_and_the_fix(tmp_path, write_fasta):
    from mambadna.cli import cli

    path = write_fasta(tmp_path / "g.fa", RECORDS)
    with pytest.raises(ConfigError, match=r"end 50 is before start 100") as info:
        list(read_records(path, region="chr1:100-50"))
    assert info.value.path == str(path) and "chr1:50-100" in info.value.fix
    result = CliRunner().invoke(cli, ["tokenize", str(path), "-o", str(tmp_path / "s"),
                                      "--region", "chr1:100-50"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {path}: region 'chr1:100-50': end 50 is before")
    assert "e.g. chr1:50-100" in result.output


def test_crlf_cut_by_a_small_first_block_is_not_cr_only(tmp_path):
    path = tmp_path / "g.fa"
    path.write_bytes(b">rec0 description 0\r\nACGT\r\n")
    assert [r.sequence for r in read_fasta(path, block_size=20)] == [b"ACGT"]
