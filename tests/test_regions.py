"""The ``name:start-end`` notation (mambadna.regions): samtools' meaning, 1-based inclusive,
parsed and printed in one place; the edge cases a user meets, and every writer of the notation
(FASTA region records, simulated split records, held-out descriptions) agreeing with it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ConfigError
from mambadna.io import read_records
from mambadna.regions import Region, as_regions, format_region, parse_region


@pytest.mark.parametrize("text, expected", [
    ("chr1", Region("chr1", 0, None)),  # the whole sequence
    ("chr1:100", Region("chr1", 99, None)),  # from base 100 to the end, as samtools reads it
    ("chr1:100-", Region("chr1", 99, None)),
    ("chr1:1001-2000", Region("chr1", 1000, 2000)),
    ("chr1:1,001-2,000", Region("chr1", 1000, 2000)),  # thousands separators
    ("chr1:1-1", Region("chr1", 0, 1)),  # one base
    ("  chrX:5-10 ", Region("chrX", 4, 10)),
    ("HLA-A*01:01:01:01", Region("HLA-A*01:01:01", 0, None)),  # resolved against names later
    ("{HLA-A*01:01:01:01}:1-100", Region("HLA-A*01:01:01:01", 0, 100)),
    ("{HLA-A*01:01:01:01}", Region("HLA-A*01:01:01:01", 0, None)),
    ("chr1:abc", Region("chr1:abc", 0, None)),  # not an interval: a name, as in samtools
])
def test_parse(text, expected):
    region = parse_region(text)
    assert (region.name, region.start, region.end) == (expected.name, expected.start,
                                                       expected.end)


@pytest.mark.parametrize("text, message, fix", [
    ("chr1:100-50", "end 50 is before start 100", "chr1:50-100"),
    ("chr1:0-10", "start must be >= 1", "chr1:1-10"),
    ("", "cannot parse region", "NAME:START-END"),
    ("{HLA-A*01:01}:20-10", "end 10 is before start 20", "{HLA-A*01:01}:10-20"),
])
def test_bad_regions_say_what_and_how_to_fix(text, message, fix):
    with pytest.raises(ConfigError, match=message) as info:
        parse_region(text)
    assert fix in info.value.fix


@pytest.mark.parametrize("region, text", [
    (Region("chr1"), "chr1"),
    (Region("chr1", 1000, 2000), "chr1:1001-2000"),
    (Region("chr1", 99), "chr1:100-"),
    (Region("HLA-A*01:01", 0, 100), "{HLA-A*01:01}:1-100"),
    (Region("HLA-A*01:01"), "HLA-A*01:01"),  # whole: the name itself, which resolves
])
def test_format_round_trips(region, text):
    assert str(region) == format_region(region.name, region.start, region.end) == text
    assert Region.parse(text).resolve({"chr1", "HLA-A*01:01"}) == region


def test_resolve_prefers_a_sequence_named_like_the_string():
    asked = Region.parse("HLA-A*01:01:01:01")
    assert asked.resolve({"HLA-A*01:01:01:01"}) == Region("HLA-A*01:01:01:01")
    assert asked.resolve({"HLA-A*01:01:01"}) == Region("HLA-A*01:01:01", 0, None)
    assert Region("chr1", 10, 50).clip(30) == Region("chr1", 10, 30)
    assert Region("chr1", 10).clip(30) == Region("chr1", 10, 30)
    assert as_regions(None) == [] and as_regions("chr1:2-3") == [Region("chr1", 1, 3)]


def test_a_fasta_region_is_what_samtools_faidx_returns(tmp_path, write_fasta):
    # samtools faidx g.fa chr1:3-6 prints bases 3..6 counted from 1: "GTAC" of ACGTACGT
    path = write_fasta(tmp_path / "g.fa", {"chr1": "ACGTACGTAA", "HLA-A*01:01": "GGGCCC"})
    (record,) = read_records(path, region="chr1:3-6")
    assert (record.name, record.sequence, record.region) == ("chr1:3-6", b"GTAC", "chr1:3-6")
    assert next(read_records(path, region="chr1:9")).sequence == b"AA"
    assert next(read_records(path, region="chr1:1,0-1,000")).sequence == b"A"  # clipped
    assert next(read_records(path, region="HLA-A*01:01")).sequence == b"GGGCCC"
    assert next(read_records(path, region="{HLA-A*01:01}:2-3")).sequence == b"GG"
    # the same region asked twice is one record (no duplicate-name error)
    assert [r.name for r in read_records(path, region=["chr1:1-2", "chr1:1-2", "chr1"])] == [
        "chr1:1-2", "chr1"]


def test_a_reversed_region_names_the_file_on_the_command_line(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", {"chr1": "ACGTACGT"})
    with pytest.raises(ConfigError, match="end 50 is before start 100") as info:
        list(read_records(path, region="chr1:100-50"))
    assert info.value.path is not None and "g.fa" in str(info.value.path)
    result = CliRunner().invoke(cli, ["validate", str(path), "--region", "chr1:100-50"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {path}: region 'chr1:100-50'")
    assert "chr1:50-100" in result.output

