"""``-`` reads the standard input: from a real pipe (not seekable), format and compression
detected from its buffered head, read once, with clear errors for what a pipe cannot do."""

from __future__ import annotations

import io
import os
import sys
import threading

import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ConfigError, FormatError
from mambadna.io import read_records, read_tokens
from mambadna.io.stdin import HEAD_SIZE

pysam = pytest.importorskip("pysam")


@pytest.fixture
def pipe_stdin(monkeypatch):
    """pipe_stdin(data): sys.stdin becomes the read end of an OS pipe fed with ``data``."""
    threads = []

    def install(data: bytes) -> None:
        read_fd, write_fd = os.pipe()

        def feed() -> None:
            with os.fdopen(write_fd, "wb") as sink:
                try:
                    sink.write(data)
                except BrokenPipeError:
                    pass

        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        threads.append(thread)
        stream = io.TextIOWrapper(os.fdopen(read_fd, "rb"))
        monkeypatch.setattr(sys, "stdin", stream)
        with pytest.raises(OSError):
            stream.buffer.seek(0)  # a pipe, as `samtools view -b ... |` gives

    yield install
    for thread in threads:
        thread.join(timeout=5)


def _bam_bytes(tmp_path, sequences: list[str]) -> bytes:
    path = tmp_path / "u.bam"
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, sequence in enumerate(sequences):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.flag, read.query_sequence = f"r{i}", 4, sequence
            out.write(read)
    return path.read_bytes()


def test_fasta_from_a_pipe(pipe_stdin, write_fasta, tmp_path):
    path = write_fasta(tmp_path / "g.fa", {"a": "ACGT" * 10, "b": "GG"})
    pipe_stdin(path.read_bytes())
    records = list(read_records("-"))
    assert [(r.name, r.sequence, r.source) for r in records] == [
        ("a", b"ACGT" * 10, "-"), ("b", b"GG", "-")]


@pytest.mark.parametrize("compress", ["gzip", "bgzip"])
def test_compressed_fastq_longer_than_the_buffered_head(pipe_stdin, write_fastq, tmp_path,
                                                        random_dna, compress):
    # more than HEAD_SIZE of data: detection sees the head, the reader gets all of it
    reads = {f"r{i}": random_dna(150, seed=i) for i in range(6000)}
    path = write_fastq(tmp_path / "r.fq", reads, compress=compress)
    assert len(path.read_bytes()) > HEAD_SIZE
    pipe_stdin(path.read_bytes())
    names = [name for name, _, _ in read_tokens("-")]
    assert names == list(reads)


def test_bam_from_a_pipe(pipe_stdin, tmp_path, random_dna):
    # unaligned BAM larger than the buffered head: pysam reads the head, then the rest
    sequences = [random_dna(150, seed=i) for i in range(6000)]
    data = _bam_bytes(tmp_path, sequences)
    assert len(data) > HEAD_SIZE
    pipe_stdin(data)
    records = list(read_records("-"))
    assert [r.sequence.decode() for r in records] == sequences
    assert records[0].name == "r0" and records[0].source == "-"


def test_validate_and_tokenize_read_stdin(tmp_path, write_fasta):
    data = write_fasta(tmp_path / "g.fa", {"a": "ACGTN", "b": "GGCC"}).read_bytes()
    result = CliRunner().invoke(cli, ["validate", "-"], input=data)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("-\tfasta\trecords=2\tbases=9")
    result = CliRunner().invoke(cli, ["tokenize", "-", "-o", str(tmp_path / "store")],
                                input=data)
    assert result.exit_code == 0, result.output
    assert "2 records, 9 bases (1 N)" in result.output


def test_what_a_pipe_cannot_do_is_an_error(tmp_path, write_fasta):
    data = write_fasta(tmp_path / "g.fa", {"a": "ACGT"}).read_bytes()
    runner = CliRunner()
    twice = runner.invoke(cli, ["validate", "-", "-"], input=data)
    assert twice.exit_code == 1 and "more than once" in twice.output
    region = runner.invoke(cli, ["validate", "-", "--region", "a:1-2"], input=data)
    assert region.exit_code == 1 and "cannot be indexed" in region.output
    empty = runner.invoke(cli, ["validate", "-"], input=b"")
    assert empty.exit_code == 1 and "standard input is empty" in empty.output
    bad = runner.invoke(cli, ["validate", "-"], input=b">a\nACGTX\n")
    assert bad.exit_code == 1 and "invalid character 'X'" in bad.output


def test_stdin_is_read_once(pipe_stdin, tmp_path, write_fasta):
    pipe_stdin(write_fasta(tmp_path / "g.fa", {"a": "ACGT"}).read_bytes())
    assert len(list(read_records("-"))) == 1
    with pytest.raises(ConfigError, match="read only once"):
        list(read_records("-"))


def test_binary_junk_on_stdin_is_named(pipe_stdin):
    pipe_stdin(b"\x00\x01\x02 not a sequence file")
    with pytest.raises(FormatError, match="binary data"):
        list(read_records("-"))


@pytest.mark.parametrize("keep", [0.5, None])
def test_a_truncated_bam_on_stdin_is_named(pipe_stdin, tmp_path, random_dna, keep):
    # cut after the buffered head (the reader meets the end) or within it (detection does)
    data = _bam_bytes(tmp_path, [random_dna(150, seed=i) for i in range(6000)])
    pipe_stdin(data[:int(len(data) * keep)] if keep else data[:100])
    with pytest.raises(FormatError, match="truncated"):
        list(read_records("-"))
