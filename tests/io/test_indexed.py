"""Indexes that no longer describe their file (the file changed after `samtools faidx` or
`samtools index`) are refused before any indexed read, with the fix; never read silently."""

from __future__ import annotations

import os

import pysam
import pytest

from mambadna.errors import IndexRequiredError
from mambadna.io import fetch_interval, read_records
from mambadna.pipelines.sources import RecordStream


def _age(path, seconds=10):
    """Make ``path`` look written ``seconds`` earlier (the index predates the change)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def _indexed(tmp_path, write_fasta, records, **kw):
    path = write_fasta(tmp_path / "g.fa", records, **kw)
    pysam.faidx(str(path))
    return path


def test_an_index_older_than_the_fasta_is_refused(tmp_path, write_fasta):
    path = _indexed(tmp_path, write_fasta, {"chr1": "ACGT" * 10, "chr2": "GGGG"})
    assert fetch_interval(path, "chr1", 0, 4) == b"ACGT"
    write_fasta(path, {"chrX": "TTTT", "chr1": "ACGT" * 10, "chr2": "GGGG"})  # edited
    _age(f"{path}.fai")
    for read in (lambda: fetch_interval(path, "chr1", 0, 4),
                 lambda: list(read_records(path, region="chr1:1-4")),
                 lambda: RecordStream([path])):  # classify/embed --stream, before any work
        with pytest.raises(IndexRequiredError, match=r"g\.fa\.fai is older than the file") \
                as info:
            read()
        assert info.value.path == str(path) and "samtools faidx g.fa" in info.value.fix


def test_an_index_whose_layout_does_not_fit_the_file_is_refused(tmp_path, write_fasta):
    path = _indexed(tmp_path, write_fasta, {"chr1": "ACGT" * 10, "chr2": "GGGG" * 10},
                    width=8)
    fai = f"{path}.fai"
    index = open(fai).read()
    write_fasta(path, {"chr1": "ACGT" * 10, "chr2": "GG"}, width=8)  # shorter: past the end
    os.utime(fai)  # an index touched after the change (copied, restored from a backup)
    with pytest.raises(IndexRequiredError, match="past the end of the file"):
        fetch_interval(path, "chr1", 0, 4)
    write_fasta(path, {"chr1": "ACGT" * 10, "chr2": "GGGG" * 10}, width=5)  # rewrapped
    with open(fai, "w") as handle:
        handle.write(index)
    with pytest.raises(IndexRequiredError, match="does not start at byte"):
        list(read_records(path, region="chr2:1-4"))


def test_a_gzi_older_than_the_bgzip_fasta_is_refused(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa.gz", {"chr1": "ACGT" * 10}, compress="bgzip")
    assert fetch_interval(path, "chr1", 0, 4) == b"ACGT"  # builds .fai and .gzi
    write_fasta(path, {"chr1": "TTTT" * 10}, compress="bgzip")
    os.utime(f"{path}.fai")
    _age(f"{path}.gzi")
    with pytest.raises(IndexRequiredError, match=r"\.gzi is older than the file"):
        fetch_interval(path, "chr1", 0, 4)


def test_a_bam_index_older_than_the_bam_is_refused(tmp_path, write_fasta, random_dna):
    from tests.io.test_alignments import write_alignments

    bam = write_alignments(tmp_path / "r.bam", [dict(name="r1", seq=random_dna(30), pos=5)],
                           index=True)
    assert [r.name for r in read_records(bam, region="chr1:1-100")] == ["r1"]
    _age(f"{bam}.bai")
    with pytest.raises(IndexRequiredError, match=r"r\.bam\.bai is older") as info:
        list(read_records(bam, region="chr1:1-100"))
    assert "samtools index r.bam" in info.value.fix
