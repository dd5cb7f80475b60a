"""BAM/CRAM/SAM reading through pysam: orientation, pairs, filters, regions, CRAM references.

The files are written by the tests with pysam (tiny, a few reads on a 600-base reference).
"""

from __future__ import annotations

import pytest

from mambadna.alphabet import reverse_complement_str
from mambadna.errors import ConfigError, FormatError, IndexRequiredError, InputError
from mambadna.io import ReadFilter, detect_format, read_records

pysam = pytest.importorskip("pysam")

REF_LEN = 600


@pytest.fixture
def reference(tmp_path, write_fasta, random_dna):
    seq = random_dna(REF_LEN, seed=11)
    return write_fasta(tmp_path / "ref.fa", {"chr1": seq, "chr2": random_dna(100)}), seq


def _segment(header, name, seq, flag=0, pos=None, mapq=60, qual=None):
    a = pysam.AlignedSegment(header)
    a.query_name, a.flag, a.query_sequence = name, flag, seq
    if pos is None:
        a.reference_id, a.reference_start, a.mapping_quality = -1, -1, 0
        a.flag |= 4
    else:
        a.reference_id, a.reference_start, a.mapping_quality = 0, pos, mapq
        a.cigartuples = [(0, len(seq))] if seq != "*" else [(0, 20)]
    if qual is not None:
        a.query_qualities = pysam.qualitystring_to_array(qual)
    return a


def write_alignments(path, reads, *, mode="wb", with_sq=True, reference=None, index=False):
    """reads: dicts of _segment's arguments, in coordinate order."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate" if with_sq else "unsorted"}}
    if with_sq:
        header["SQ"] = [{"SN": "chr1", "LN": REF_LEN}, {"SN": "chr2", "LN": 100}]
    kwargs = {"reference_filename": str(reference)} if reference else {}
    with pysam.AlignmentFile(str(path), mode, header=header, **kwargs) as out:
        for read in reads:
            out.write(_segment(out.header, **read))
    if index:
        pysam.index(str(path))
    return path


def test_unaligned_bam_keeps_every_read_with_pair_suffixes(tmp_path):
    reads = [dict(name="p", seq="ACGTA", flag=1 | 64, qual="!!II#"),
             dict(name="p", seq="GGCC", flag=1 | 128),
             dict(name="single", seq="TTTT")]
    path = write_alignments(tmp_path / "u.bam", reads, with_sq=False)
    assert detect_format(path) == "bam"
    records = list(read_records(path))
    assert [(r.name, r.sequence) for r in records] == [
        ("p/1", b"ACGTA"), ("p/2", b"GGCC"), ("single", b"TTTT")]
    assert records[0].quality == b"!!II#" and records[0].line is None
    assert records[1].quality is None  # no qualities stored ('*')


def test_reverse_strand_reads_come_back_as_sequenced(tmp_path, reference):
    _, ref = reference
    original = reverse_complement_str(ref[100:130])  # a read from the minus strand
    reads = [dict(name="fwd", seq=ref[10:40], pos=10),
             dict(name="rev", seq=ref[100:130], flag=16, pos=100, qual="I" * 29 + "!")]
    path = write_alignments(tmp_path / "a.bam", reads)
    records = {r.name: r for r in read_records(path)}
    assert records["fwd"].sequence == ref[10:40].encode()
    assert records["rev"].sequence == original.encode()
    assert records["rev"].quality == b"!" + b"I" * 29  # qualities reversed too


def _flagged_reads(ref):
    return [dict(name="primary", seq=ref[0:20], pos=0),
            dict(name="secondary", seq=ref[5:25], flag=256, pos=5),
            dict(name="supplementary", seq=ref[10:30], flag=2048, pos=10),
            dict(name="qcfail", seq=ref[20:40], flag=512, pos=20),
            dict(name="duplicate", seq=ref[30:50], flag=1024, pos=30),
            dict(name="lowmapq", seq=ref[40:60], pos=40, mapq=3),
            dict(name="unmapped", seq="ACGTACGT")]


def test_default_filter_keeps_each_read_once(tmp_path, reference):
    path = write_alignments(tmp_path / "a.bam", _flagged_reads(reference[1]))
    assert [r.name for r in read_records(path)] == ["primary", "lowmapq", "unmapped"]


def test_filters_are_configurable(tmp_path, reference):
    path = write_alignments(tmp_path / "a.bam", _flagged_reads(reference[1]))
    keep_all = ReadFilter(skip_secondary=False, skip_supplementary=False, skip_qcfail=False,
                          skip_duplicates=False)
    assert len(list(read_records(path, flags=keep_all))) == 7
    strict = ReadFilter(min_mapq=20, skip_unmapped=True)
    assert [r.name for r in read_records(path, flags=strict)] == ["primary"]
    # min_mapq applies to mapped reads only: unaligned reads survive it.
    assert [r.name for r in read_records(path, flags=ReadFilter(min_mapq=20))] == [
        "primary", "unmapped"]
    with pytest.raises(ConfigError):
        ReadFilter(min_mapq=300)


def test_included_secondary_without_sequence_is_a_clear_error(tmp_path, reference):
    reads = [dict(name="r", seq=reference[1][:20], pos=0),
             dict(name="r", seq="*", flag=256, pos=50)]
    path = write_alignments(tmp_path / "a.bam", reads)
    assert [r.name for r in read_records(path)] == ["r"]
    with pytest.raises(FormatError, match="no stored sequence"):
        list(read_records(path, flags=ReadFilter(skip_secondary=False),
                          allow_duplicates=True))


def test_region_queries_need_an_index(tmp_path, reference):
    ref = reference[1]
    reads = [dict(name=f"r{p}", seq=ref[p:p + 30], pos=p) for p in (0, 100, 200, 300)]
    path = write_alignments(tmp_path / "a.bam", reads)
    with pytest.raises(IndexRequiredError, match="indexed BAM") as info:
        list(read_records(path, region="chr1:150-250"))
    assert "samtools index" in info.value.fix
    pysam.index(str(path))
    # 1-based inclusive 150-250 is [149, 250): r100 ends at 130, r300 starts at 300.
    assert [r.name for r in read_records(path, region="chr1:150-250")] == ["r200"]
    assert [r.name for r in read_records(path, region=["chr1:1-10", "chr1:301-310"])] == [
        "r0", "r300"]
    with pytest.raises(InputError, match="no sequence 'chrX'"):
        list(read_records(path, region="chrX:1-10"))


def test_sam_text_with_and_without_header(tmp_path, reference):
    ref = reference[1]
    path = write_alignments(tmp_path / "a.sam", [dict(name="r1", seq=ref[:25], pos=0)],
                            mode="w")
    assert detect_format(path) == "sam"
    assert [r.sequence for r in read_records(path)] == [ref[:25].encode()]
    body = "\t".join(["u1", "4", "*", "0", "0", "*", "*", "0", "0", "ACGTT", "IIIII"])
    bare = tmp_path / "bare.sam"
    bare.write_text(body + "\n")
    assert detect_format(bare) == "sam"
    assert [(r.name, r.sequence) for r in read_records(bare)] == [("u1", b"ACGTT")]
    with pytest.raises(IndexRequiredError):
        list(read_records(path, region="chr1:1-10"))


def test_cram_needs_its_reference(tmp_path, reference):
    ref_path, ref = reference
    reads = [dict(name="r1", seq=ref[50:90], pos=50), dict(name="r2", seq=ref[300:340],
                                                           flag=16, pos=300)]
    path = write_alignments(tmp_path / "a.cram", reads, mode="wc", reference=ref_path,
                            index=True)
    assert detect_format(path) == "cram"
    with pytest.raises(ConfigError, match="reference") as info:
        list(read_records(path))
    assert "--reference" in info.value.fix
    records = list(read_records(path, reference=ref_path))
    assert [r.sequence for r in records] == [ref[50:90].encode(),
                                             reverse_complement_str(ref[300:340]).encode()]
    assert [r.name for r in read_records(path, reference=ref_path, region="chr1:301-310")] == [
        "r2"]


def test_truncated_bam(tmp_path, reference, random_dna):
    reads = [dict(name=f"r{i}", seq=random_dna(150, seed=i)) for i in range(300)]
    path = write_alignments(tmp_path / "a.bam", reads, with_sq=False)
    cut = tmp_path / "cut.bam"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FormatError, match="truncated"):
        list(read_records(cut))


def test_cli_reader_options_reach_the_reader(tmp_path, reference):
    from click.testing import CliRunner

    from mambadna.cli import cli
    from mambadna.data.store import TokenStore

    ref_path, ref = reference
    bam = write_alignments(tmp_path / "a.bam", _flagged_reads(ref), index=True)
    runner = CliRunner()
    result = runner.invoke(cli, ["tokenize", str(bam), "-o", str(tmp_path / "s1"),
                                 "--include-secondary", "--min-mapq", "10", "--skip-unmapped"])
    assert result.exit_code == 0, result.output
    assert TokenStore(tmp_path / "s1").names == ["primary", "secondary"]
    result = runner.invoke(cli, ["tokenize", str(bam), "-o", str(tmp_path / "s2"),
                                 "--region", "chr1:41-50"])
    assert result.exit_code == 0 and TokenStore(tmp_path / "s2").names == ["lowmapq"]
    cram = write_alignments(tmp_path / "a.cram", [dict(name="r", seq=ref[:30], pos=0)],
                            mode="wc", reference=ref_path)
    result = runner.invoke(cli, ["validate", str(cram)])
    assert result.exit_code == 1 and "--reference" in result.output
    result = runner.invoke(cli, ["validate", str(cram), "--reference", str(ref_path)])
    assert result.exit_code == 0 and "\tcram\trecords=1\tbases=30" in result.output
