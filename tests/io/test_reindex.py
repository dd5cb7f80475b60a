"""``--reindex`` / ``reindex=True``: an index that no longer fits its file is rebuilt with pysam
(atomically) instead of refused, and what is read is then the file's true content; without it
the stale index is still refused, with --reindex named in the fix (issue 19)."""

from __future__ import annotations

import gzip
import os

import pysam
import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import IndexRequiredError
from mambadna.io import IndexedFasta, ReadOptions, fetch_interval, read_records
from mambadna.io.alignments import rebuild_alignment_index
from mambadna.io.indexed import rebuild_fasta_index
from mambadna.pipelines.sources import RecordStream


def _age(path, seconds=10):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def _stale_fasta(tmp_path, write_fasta, compress=None):
    name = "g.fa.gz" if compress else "g.fa"
    path = write_fasta(tmp_path / name, {"chr1": "ACGT" * 10, "chr2": "GGGG"}, compress=compress)
    pysam.faidx(str(path))
    write_fasta(path, {"chrX": "TTTTCC", "chr1": "CCGT" * 10, "chr2": "GGGG"},
                compress=compress)  # edited after indexing
    for suffix in (".fai", ".gzi"):
        if os.path.exists(f"{path}{suffix}"):
            _age(f"{path}{suffix}")
    return path


@pytest.mark.parametrize("compress", [None, "bgzip"])
def test_a_stale_fasta_index_is_rebuilt_when_allowed(tmp_path, write_fasta, compress):
    path = _stale_fasta(tmp_path, write_fasta, compress)
    with pytest.raises(IndexRequiredError, match="older than the file") as info:
        fetch_interval(path, "chr1", 0, 4)
    assert "--reindex" in info.value.fix
    with IndexedFasta(path, reindex=True) as fasta:
        assert fasta.names == ["chrX", "chr1", "chr2"]
        assert fasta.fetch("chr1", 0, 4) == b"CCGT"
    assert fetch_interval(path, "chrX", 0, 6) == b"TTTTCC"  # the new index is accepted as is
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporaries
    (tmp_path / "b").mkdir()
    again = _stale_fasta(tmp_path / "b", write_fasta, compress)
    records = list(read_records(again, region="chr1:1-4", reindex=True))
    assert [(r.name, r.sequence) for r in records] == [("chr1:1-4", b"CCGT")]


def test_a_stream_rebuilds_before_any_work(tmp_path, write_fasta):
    path = _stale_fasta(tmp_path, write_fasta)
    with pytest.raises(IndexRequiredError):
        RecordStream([path])
    stream = RecordStream([path], ReadOptions(reindex=True))
    assert [(r.name, r.length) for r in stream] == [("chrX", 6), ("chr1", 40), ("chr2", 4)]
    stream.close()


def test_a_failed_rebuild_leaves_the_old_index(tmp_path, write_fasta):
    path = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 10}, width=8)
    pysam.faidx(str(path))
    old = open(f"{path}.fai").read()
    path.write_text(">chr1\nACGTACGT\nACG\nACGTACGT\n")  # uneven lines: cannot be indexed
    with pytest.raises(Exception, match="cannot index this FASTA") as info:
        rebuild_fasta_index(path)
    assert "rewrap" in info.value.fix
    assert open(f"{path}.fai").read() == old
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def _bam(tmp_path, random_dna, seqs, index=True):
    from tests.io.test_alignments import write_alignments

    return write_alignments(tmp_path / "r.bam", [dict(name=f"r{i}", seq=s, pos=5 + 10 * i)
                                                 for i, s in enumerate(seqs)], index=index)


def test_a_stale_bam_index_is_rebuilt_and_a_missing_one_built(tmp_path, random_dna):
    bam = _bam(tmp_path, random_dna, [random_dna(30)])
    _bam(tmp_path, random_dna, [random_dna(30), random_dna(30, seed=1)], index=False)  # edited
    _age(f"{bam}.bai")
    with pytest.raises(IndexRequiredError, match="older") as info:
        list(read_records(bam, region="chr1:1-100"))
    assert "--reindex" in info.value.fix
    names = [r.name for r in read_records(bam, region="chr1:1-100", reindex=True)]
    assert names == ["r0", "r1"]
    os.remove(f"{bam}.bai")
    with pytest.raises(IndexRequiredError, match="indexed BAM"):
        list(read_records(bam, region="chr1:1-100"))
    assert [r.name for r in read_records(bam, region="chr1", reindex=True)] == ["r0", "r1"]
    assert os.path.isfile(f"{bam}.bai")
    csi = rebuild_alignment_index(bam, "bam", tmp_path / "r.bam.csi")
    assert gzip.decompress(csi.read_bytes())[:4] == b"CSI\x01"


def test_cli_reindex(tmp_path, write_fasta):
    path = _stale_fasta(tmp_path, write_fasta)
    refused = CliRunner().invoke(cli, ["validate", "--region", "chr1:1-4", str(path)])
    assert refused.exit_code == 1 and "--reindex" in refused.output
    rebuilt = CliRunner().invoke(cli, ["validate", "--reindex", "--region", "chr1:1-4",
                                       str(path)])
    assert rebuilt.exit_code == 0, rebuilt.output
