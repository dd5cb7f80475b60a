"""FASTQ reading: four-line and multi-line records, gzip, qualities, bad input."""

from __future__ import annotations

import pytest

from mambadna.errors import ConfigError, DuplicateRecordError, FormatError
from mambadna.io import detect_format, read_records
from mambadna.io.fastq import read_fastq


@pytest.mark.parametrize("compress", [None, "gzip", "bgzip"])
def test_four_line_records(tmp_path, write_fastq, compress):
    path = write_fastq(tmp_path / "reads.fq", [("r1", "ACGT", "!#5I"), ("r2", "ggNN")],
                       compress=compress)
    assert detect_format(path) == "fastq"
    r1, r2 = read_records(path)
    assert (r1.name, r1.sequence, r1.quality, r1.line) == ("r1", b"ACGT", b"!#5I", 1)
    assert (r2.name, r2.sequence, r2.quality, r2.line) == ("r2", b"ggNN", b"IIII", 5)


def test_multi_line_records_crlf_descriptions_and_plus_repeats(tmp_path):
    path = tmp_path / "reads.fq"
    # The second quality line starts with '@': it is quality, not a header.
    path.write_bytes(b"@r1 run=7 lane 2\r\nACG\r\nTA\r\n+r1 run=7 lane 2\r\nIII\r\n@I\r\n\r\n"
                     b"@r2\nA\n+\n#\n")
    r1, r2 = read_records(path)
    assert (r1.name, r1.description, r1.sequence, r1.quality) == (
        "r1", "run=7 lane 2", b"ACGTA", b"III@I")
    assert (r2.name, r2.sequence, r2.line) == ("r2", b"A", 8)


def test_quality_length_must_match(tmp_path):
    path = tmp_path / "reads.fq"
    path.write_bytes(b"@r1\nACGT\n+\nIII\n@r2\nACGT\n+\nIIII\n")
    with pytest.raises(FormatError, match="quality length 3 != sequence length 4") as info:
        list(read_records(path))
    assert (info.value.record, info.value.line) == ("r1", 1)


def test_quality_too_long(tmp_path):
    path = tmp_path / "reads.fq"
    path.write_bytes(b"@r1\nACGT\n+\nIIIII\n")
    with pytest.raises(FormatError, match="quality length 5 != sequence length 4"):
        list(read_records(path))


@pytest.mark.parametrize("data, message", [
    (b"@r1\nACGT\n", "no '\\+' line"),
    (b"@r1\nACGT\n+\nII", "quality has 2 of 4"),
    (b"@r1\nACGT\n+\nIIII\nr2\nAC\n+\nII\n", "expected a FASTQ header"),
])
def test_truncated_or_broken_structure(tmp_path, data, message):
    path = tmp_path / "reads.fq"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=message):
        list(read_records(path))


@pytest.mark.parametrize("data, message", [
    (b"@\nAC\n+\nII\n", "header without a name"),
    (b"@r1\n\n+\n\n", "no sequence"),
    (b"@r1\nAC\n+r9\nII\n", "names 'r9'"),
    (b"@r1\nAC\n+\nI \n", "Phred"),
])
def test_recoverable_record_problems(tmp_path, data, message):
    path = tmp_path / "reads.fq"
    path.write_bytes(data + b"@ok\nA\n+\nI\n")
    with pytest.raises(FormatError, match=message):
        list(read_records(path))
    problems = []
    assert [r.name for r in read_records(path, on_problem=problems.append)] == ["ok"]
    assert len(problems) == 1


def test_duplicate_read_names(tmp_path, write_fastq):
    path = write_fastq(tmp_path / "reads.fq", [("r1", "AC"), ("r1", "GT")])
    with pytest.raises(DuplicateRecordError) as info:
        list(read_records(path))
    assert info.value.line == 5
    assert len(list(read_records(path, allow_duplicates=True))) == 2


def test_fastq_has_no_regions(tmp_path, write_fastq):
    path = write_fastq(tmp_path / "reads.fq", [("r1", "AC")])
    with pytest.raises(ConfigError, match="no coordinates"):
        read_records(path, region="chr1:1-10")


def test_small_blocks_read_the_same(tmp_path, write_fastq, random_dna):
    reads = [(f"r{i}", random_dna(30 + i, seed=i)) for i in range(20)]
    path = write_fastq(tmp_path / "reads.fq", reads)
    assert [r.sequence for r in read_fastq(path, block_size=7)] == [
        s.encode() for _, s in reads]


def test_a_missing_plus_line_is_named_as_such(tmp_path):
    path = tmp_path / "r.fq"
    path.write_text("@r1\nACGT\nIIII\n@r2\nACGT\n+\nIIII\n")
    with pytest.raises(FormatError, match=r"no '\+' line: the next header .*line 4") as info:
        list(read_fastq(path))
    assert info.value.record == "r1" and info.value.line == 1 and "'+'" in info.value.fix
    assert "truncated" not in str(info.value)
