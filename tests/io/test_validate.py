"""``mambadna validate``: per-file summaries, first problem vs --all, file:line messages."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import AlphabetError, DuplicateRecordError, FormatError
from mambadna.io.validate import validate, validate_file


def test_summary_of_a_good_file(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa.gz", {"chr1": "ACGTNNacgt", "chr2": "GGCC"},
                     compress="bgzip")
    s = validate_file(fa)
    assert s.ok and (s.format, s.records, s.bases, s.n_count) == ("fasta", 2, 14, 2)
    assert s.gc == pytest.approx(8 / 12) and s.n_fraction == pytest.approx(2 / 14)
    assert s.lowercase_fraction == pytest.approx(4 / 14)
    assert s.line().startswith(f"{fa}\tfasta\trecords=2\tbases=14\tN=0.1429\tGC=0.6667\t")
    assert s.line().endswith("\tok")


def test_first_problem_stops_unless_all(tmp_path):
    fa = tmp_path / "bad.fa"
    fa.write_bytes(b">a\nACGT\nACXU\n>b\n>a\nGG\n>c\nAC\n")
    first = validate_file(fa)
    assert len(first.problems) == 1 and isinstance(first.problems[0], AlphabetError)
    assert str(first.problems[0]).startswith(f"{fa}:3: record 'a', position 6")
    assert "1 more invalid" in str(first.problems[0])
    every = validate_file(fa, collect_all=True)
    kinds = [(type(p), p.line) for p in every.problems]
    assert kinds == [(AlphabetError, 3), (FormatError, 4), (DuplicateRecordError, 5)]
    assert every.records == 2  # a (counted despite its bad letters) and c
    assert every.line().endswith("3 problems")


def test_fatal_problems_end_the_file_but_not_the_run(tmp_path, write_fasta):
    good = write_fasta(tmp_path / "good.fa", {"x": "ACGT"})
    binary = tmp_path / "image.fa"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    summaries = validate([binary, tmp_path / "missing.fa", good], collect_all=True)
    assert [s.ok for s in summaries] == [False, False, True]
    assert "binary data" in str(summaries[0].problems[0])
    assert "no such file" in str(summaries[1].problems[0])
    assert math.isnan(summaries[1].gc)
    # Without --all the run stops at the first bad file.
    assert len(validate([binary, good])) == 1


def test_problem_limit(tmp_path):
    fa = tmp_path / "many.fa"
    fa.write_bytes(b"".join(b">r%d\nACGU\n" % i for i in range(30)))
    s = validate_file(fa, collect_all=True, max_problems=10)
    assert len(s.problems) == 10 and s.truncated_problems == 20
    assert s.line().endswith("30 problems")


def test_policies_match_tokenize(tmp_path, write_fastq):
    fq = write_fastq(tmp_path / "r.fq", [("r1", "ACGTRY"), ("r2", "ACGT")])
    assert validate_file(fq).ok
    strict = validate_file(fq, on_invalid="error")
    assert "IUPAC" in str(strict.problems[0]) and strict.problems[0].line == 2


def test_cli_validate(tmp_path, write_fasta):
    good = write_fasta(tmp_path / "good.fa", {"x": "ACGT"})
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b">a\nAC\n>\nGG\n>b\n")
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", str(good)])
    assert ok.exit_code == 0 and ok.output.startswith(f"{good}\tfasta\trecords=1\tbases=4")
    result = runner.invoke(cli, ["validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: header without a name" in result.output
    assert "no sequence" not in result.output  # only the first problem
    every = runner.invoke(cli, ["validate", "--all", str(bad)])
    assert every.exit_code == 1
    assert f"{bad}:3: header without a name" in every.output
    assert f"{bad}:5: record 'b': record has no sequence" in every.output


def test_cli_validate_bad_paths(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty.fa"
    empty.write_bytes(b"")
    for path, message in [(tmp_path / "nope.fa", "no such file"),
                          (tmp_path, "is a directory"), (empty, "empty file")]:
        result = runner.invoke(cli, ["validate", str(path)])
        assert result.exit_code == 1 and message in result.output, result.output
