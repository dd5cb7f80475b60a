"""Shared test helpers: tiny sequence files written by the tests themselves.

Fixtures return plain functions so tests can write as many files as they need::

    def test_x(tmp_path, write_fasta, random_dna):
        path = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(100)}, compress="bgzip")

Keep this file small and stable; add fixtures at the end.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pytest

RecordsLike = Mapping[str, str] | Iterable[tuple]  # {name: seq} or (name, seq[, description])


def _records(records: RecordsLike) -> list[tuple[str, str, str]]:
    items = records.items() if isinstance(records, Mapping) else records
    return [(r[0], r[1], r[2] if len(r) > 2 else "") for r in items]


def _compress(path: Path, data: bytes, compress: str | None) -> Path:
    """Write ``data`` to ``path``: plain (None), "gzip" or "bgzip" (BGZF, via pysam)."""
    path = Path(path)
    if compress is None:
        path.write_bytes(data)
    elif compress == "gzip":
        path.write_bytes(gzip.compress(data, mtime=0))
    elif compress == "bgzip":
        import pysam

        plain = path.with_name(path.name + ".plain")
        plain.write_bytes(data)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    else:
        raise ValueError(f"compress must be None, 'gzip' or 'bgzip', got {compress!r}")
    return path


def fasta_text(records: RecordsLike, width: int | None = 60, newline: str = "\n") -> str:
    """FASTA text with sequence lines of ``width`` letters (None: one line per record)."""
    out = []
    for name, seq, desc in _records(records):
        out.append(f">{name} {desc}".rstrip())
        step = width or max(len(seq), 1)
        out.extend(seq[i:i + step] for i in range(0, len(seq), step))
    return newline.join(out) + newline


@pytest.fixture
def write_fasta():
    """write_fasta(path, records, *, compress=None|"gzip"|"bgzip", width=60, newline="\\n")."""

    def write(path, records: RecordsLike, *, compress: str | None = None,
              width: int | None = 60, newline: str = "\n") -> Path:
        return _compress(path, fasta_text(records, width, newline).encode(), compress)

    return write


@pytest.fixture
def write_fastq():
    """write_fastq(path, records, *, compress=None): qualities 'I' unless given as 3rd item."""

    def write(path, records: RecordsLike, *, compress: str | None = None) -> Path:
        lines = []
        items = records.items() if isinstance(records, Mapping) else records
        for item in items:
            name, seq = item[0], item[1]
            qual = item[2] if len(item) > 2 else "I" * len(seq)
            lines += [f"@{name}", seq, "+", qual]
        return _compress(path, ("\n".join(lines) + "\n").encode(), compress)

    return write


@pytest.fixture
def random_dna():
    """random_dna(length, seed=0, alphabet="ACGT") -> str, reproducible."""

    def make(length: int, seed: int = 0, alphabet: str = "ACGT") -> str:
        rng = np.random.default_rng(seed)
        letters = np.frombuffer(alphabet.encode(), dtype=np.uint8)
        return letters[rng.integers(0, len(letters), length)].tobytes().decode()

    return make


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread. Tiny models gain nothing from threads, and on a loaded
    machine OpenMP threads waiting at barriers make them many times slower (BENCHMARKS.md).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Payload:
    """Unpickling this runs ``touch marker``: what a crafted file from someone else would do.
    Tests plant it in files and check that loading refuses them and the marker never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def payload(tmp_path):
    """A Payload whose marker file is tmp_path/PWNED (checked with ``payload.marker``)."""
    return Payload(tmp_path / "PWNED")


@pytest.fixture
def small_filesystem(tmp_path):
    """mount(size="64k", read_only=False) -> an empty folder on a fresh tmpfs of that size, to
    test a full disk (ENOSPC) or a read-only filesystem (EROFS) for real. Skips where mounting
    is not allowed (it needs root); unmounted after the test."""
    import subprocess

    mounts = []

    def mount(size: str = "64k", read_only: bool = False) -> Path:
        folder = tmp_path / f"fs{len(mounts)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
