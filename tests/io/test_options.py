"""ReadOptions: built once from the command line, passed unchanged to the readers; the readers'
keyword arguments still work; the format is resolved in one place."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ConfigError
from mambadna.io import ReadFilter, ReadOptions, Region, read_records, reader_options


def test_from_cli_maps_the_flags():
    options = ReadOptions.from_cli(fmt="bam", regions=("chr1:11-20", "{HLA:1}:1-5"),
                                   reference="ref.fa", include_secondary=True, min_mapq=30,
                                   skip_unmapped=True, allow_duplicates=True, on_invalid="error",
                                   on_unknown="N")
    assert options.region == (Region("chr1", 10, 20), Region("HLA:1", 0, 5))
    assert options.flags == ReadFilter(skip_secondary=False, skip_unmapped=True, min_mapq=30)
    assert (options.fmt, options.reference, options.allow_duplicates) == ("bam", "ref.fa", True)
    assert (options.on_invalid, options.on_unknown) == ("error", "N")
    assert options.to_dict()["region"] == ["chr1:11-20", "{HLA:1}:1-5"]


def test_of_overrides_fields_and_refuses_unknown_names():
    base = ReadOptions(on_invalid="error", region="chr1")
    assert ReadOptions.of(base) is base
    assert ReadOptions.of(base, region=None) == ReadOptions(on_invalid="error")
    assert ReadOptions.of(None, fmt="fasta").fmt == "fasta"
    with pytest.raises(TypeError, match="unknown read option"):
        ReadOptions.of(base, regions=["chr1"])


@pytest.mark.parametrize("field, value, message", [
    ("fmt", "fastx", "unknown format"),
    ("on_invalid", "skip", "on_invalid must be"),
    ("on_unknown", "A", "on_unknown must be"),
    ("region", "chr1:0-5", "1-based"),
])
def test_bad_options_fail_when_built(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ReadOptions(**{field: value})


def test_format_is_resolved_once_from_the_content(tmp_path, write_fasta, write_fastq):
    fasta = write_fasta(tmp_path / "reads.txt", {"r1": "ACGT"}, compress="gzip")
    fastq = write_fastq(tmp_path / "reads.fa", {"r1": "ACGT"})
    assert ReadOptions().format_of(fasta) == "fasta"
    assert ReadOptions().format_of(fastq) == "fastq"
    assert ReadOptions(fmt="fastq").format_of(fasta) == "fastq"  # as told


def test_keywords_and_options_read_the_same(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", {"chr1": "ACGTACGTAC", "chr2": "GGGG"})
    by_keyword = [(r.name, r.sequence) for r in read_records(path, region="chr1:3-6")]
    by_options = [(r.name, r.sequence) for r in read_records(path, ReadOptions(region="chr1:3-6"))]
    assert by_keyword == by_options == [("chr1:3-6", b"GTAC")]


def test_the_cli_builds_one_object_that_reaches_the_reader(tmp_path, write_fasta, monkeypatch):
    from mambadna.data import store

    path = write_fasta(tmp_path / "g.fa", {"chr1": "ACGTRYAC"})
    seen = []
    real = store.read_tokens

    def spy(path, options=None, **read_opts):
        seen.append(options)
        return real(path, options, **read_opts)

    monkeypatch.setattr(store, "read_tokens", spy)
    result = CliRunner().invoke(cli, ["tokenize", str(path), "-o", str(tmp_path / "s"),
                                      "--on-invalid", "error", "--include-duplicates"])
    assert result.exit_code == 1 and "IUPAC ambiguity code" in result.output
    (options,) = seen
    assert isinstance(options, ReadOptions) and options.on_invalid == "error"
    assert options.flags == ReadFilter(skip_duplicates=False)


def test_deprecated_forms_still_work():
    with pytest.warns(DeprecationWarning, match="ReadOptions.from_cli"):
        kwargs = reader_options(fmt="bam", regions=["chr1"], include_qcfail=True)
    assert ReadOptions.of(**kwargs).flags == ReadFilter(skip_qcfail=False)
    from mambadna.pipelines import RunOptions

    with pytest.warns(DeprecationWarning, match="read=ReadOptions"):
        opts = RunOptions(on_invalid="error", read_opts={"fmt": "fasta"})
    assert opts.read == ReadOptions(fmt="fasta", on_invalid="error")
