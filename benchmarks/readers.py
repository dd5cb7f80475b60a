"""Benchmark FASTA -> tokens on one CPU core: ``python benchmarks/readers.py [--json PATH]``.

Generates a FASTA of --size-mb megabytes (--records records, 60-column lines, random bases
with a few lowercase and N runs) in a temporary folder and times, on a warm page cache:

- tokenize: ``write_token_store`` (read, encode, write .npy, sha256, index): what
  ``mambadna tokenize`` does;
- read+encode: ``read_records`` + ``alphabet.encode`` only;
- baseline: Biopython ``SeqIO.parse`` + per-record ``str.translate`` to token ids, the
  obvious way to write it;
- with --compressed, also tokenize of gzip (level 6) and bgzip copies of the same file.

Throughput is MB (10^6 bytes) of the uncompressed file per second; each method runs --repeats
times and the median is reported. The process is pinned to one core (--cpu).

With ``--fastq N``: FASTQ instead, N reads of 150 bp (four-line records), plain and gzip -6,
in reads per second (best of --repeats runs, the methods taking turns, so that load from other
processes on a shared machine hits them alike), side by side in one run with
``pysam.FastxFile`` (htslib's parser, every field touched) as the reference: read_records,
read_tokens, the line-by-line parser alone (what read_records ran before the block parser) and
tokenize (write_token_store). Times are CPU seconds of this process (time.process_time), which
other processes on a shared machine disturb less than wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mambadna.alphabet import encode
from mambadna.io import read_records

LINE = 60


def generate_fasta(path: Path, size_mb: float, records: int, seed: int = 0) -> int:
    """Write a FASTA of about size_mb * 10^6 bytes; return its size in bytes."""
    rng = np.random.default_rng(seed)
    # Whole lines only, so every line is exactly LINE letters.
    per_record = int(size_mb * 1e6 / records / (LINE + 1)) * LINE
    letters = np.frombuffer(b"ACGTacgt", dtype=np.uint8)
    weights = np.array([0.22] * 4 + [0.03] * 4)  # 12% soft-masked, like a repeat-masked genome
    with open(path, "wb") as fh:
        for i in range(records):
            seq = letters[rng.choice(8, size=per_record, p=weights / weights.sum())]
            seq[:10_000] = ord("N")  # an N run, as at the ends of real assemblies
            rows = seq.reshape(-1, LINE)
            body = np.hstack([rows, np.full((len(rows), 1), ord("\n"), np.uint8)]).tobytes()
            fh.write(f">chr{i + 1} simulated record {i + 1}\n".encode())
            fh.write(body)
    return path.stat().st_size


def _tokenize(fasta: Path, work: Path) -> None:
    from mambadna.data.store import write_token_store

    write_token_store([fasta], work / "store")


def _compressed_copies(fasta: Path) -> dict[str, Path]:
    """gzip -6 and bgzip copies of ``fasta`` (bgzip through pysam, as htslib writes it)."""
    import gzip

    import pysam

    gz, bgz = fasta.with_suffix(".fa.gz"), fasta.with_suffix(".fa.bgz")
    with open(fasta, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    pysam.tabix_compress(str(fasta), str(bgz), force=True)
    return {"tokenize, gzip -6 input": gz, "tokenize, bgzip input": bgz}


def _read_encode(fasta: Path, work: Path) -> None:
    for record in read_records(fasta):
        encode(record.sequence)


# Biopython baseline: letters -> token ids with one str.translate per record.
_BASELINE_TABLE = str.maketrans({**{c: chr(t) for c, t in zip("ACGTN", range(5, 10))},
                                 **{c: chr(t) for c, t in zip("acgtn", range(5, 10))}})


def _biopython(fasta: Path, work: Path) -> None:
    from Bio import SeqIO

    for record in SeqIO.parse(str(fasta), "fasta"):
        ids = str(record.seq).translate(_BASELINE_TABLE).encode("latin-1")
        np.frombuffer(ids, dtype=np.uint8)


METHODS: dict[str, Callable[[Path, Path], None]] = {
    "tokenize (write_token_store)": _tokenize,
    "read+encode (mambadna.io)": _read_encode,
    "baseline (Biopython SeqIO + str.translate)": _biopython,
}
BASELINE = "baseline (Biopython SeqIO + str.translate)"


def _warm_imports() -> None:
    """Import what the methods import (pandas, pyarrow, Biopython) before any timing."""
    import Bio.SeqIO  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import mambadna.data.store  # noqa: F401


def _time(method: Callable[[Path, Path], None], fasta: Path, work: Path, repeats: int,
          clock: Callable[[], float] = time.perf_counter):
    """Seconds per run. Each run gets an empty folder, removed outside the timed part."""
    times = []
    for i in range(repeats):
        out = work / f"run{i}"
        out.mkdir()
        start = clock()
        method(fasta, out)
        times.append(clock() - start)
        shutil.rmtree(out)
    return times


def _machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__}


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages: other processes slow a one-core benchmark down."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run(size_mb: float, records: int, repeats: int, workdir: Path | None,
        compressed: bool = False) -> dict:
    """Generate the FASTA, time every method; return the results as a dict."""
    load_start = _load()
    root = Path(tempfile.mkdtemp(prefix="mambadna-bench-", dir=workdir))
    try:
        fasta = root / "bench.fa"
        size = generate_fasta(fasta, size_mb, records)
        fasta.read_bytes()  # warm the page cache so no method pays for the first read
        _warm_imports()
        results = {}
        for name, method in METHODS.items():
            times = _time(method, fasta, root, repeats)
            results[name] = {"seconds": times, "mb_per_s": size / 1e6 / statistics.median(times)}
        for name, path in (_compressed_copies(fasta) if compressed else {}).items():
            times = _time(lambda _, work, path=path: _tokenize(path, work), fasta, root, repeats)
            results[name] = {"seconds": times, "mb_per_s": size / 1e6 / statistics.median(times),
                             "compressed_bytes": path.stat().st_size}
        base = results[BASELINE]["mb_per_s"]
        for entry in results.values():
            entry["ratio_vs_baseline"] = entry["mb_per_s"] / base
        return {"benchmark": "FASTA -> tokens, one core",
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": _machine(), "load_average_start": load_start,
                "load_average_end": _load(), "file_bytes": size, "records": records,
                "repeats": repeats, "results": results}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def generate_fastq(path: Path, reads: int, length: int = 150, seed: int = 0) -> int:
    """Write ``reads`` four-line FASTQ records of ``length`` random bases; return bytes."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for start in range(0, reads, 10_000):
            count = min(10_000, reads - start)
            bases = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, (count, length))]
            quals = rng.integers(35, 74, (count, length), dtype=np.uint8)
            fh.write(b"".join(b"@read%d lane=1\n%s\n+\n%s\n" % (start + i, b.tobytes(),
                                                                   q.tobytes())
                              for i, (b, q) in enumerate(zip(bases, quals))))
    return path.stat().st_size


def _pysam_raw(path: Path, work: Path) -> None:
    import pysam

    with pysam.FastxFile(str(path), persist=False) as fh:
        for entry in fh:
            entry.name, entry.comment, entry.sequence, entry.quality  # noqa: B018


def _fastq_records(path: Path, work: Path) -> None:
    for _record in read_records(path):
        pass


def _fastq_tokens(path: Path, work: Path) -> None:
    from mambadna.io import read_tokens

    for _item in read_tokens(path):
        pass


def _fastq_tokens_python(path: Path, work: Path) -> None:
    """read_tokens with the Python block parser (what runs where the C one was not built)."""
    previous = os.environ.get("MAMBADNA_FASTQ_C")
    os.environ["MAMBADNA_FASTQ_C"] = "0"
    try:
        _fastq_tokens(path, work)
    finally:
        if previous is None:
            del os.environ["MAMBADNA_FASTQ_C"]
        else:
            os.environ["MAMBADNA_FASTQ_C"] = previous


def _line_by_line(path: Path, work: Path) -> None:
    from mambadna.io.fasta import _raise
    from mambadna.io.fastq import _exact, _Lines
    from mambadna.io.files import iter_lines

    for _batch in _exact(path, _Lines(iter_lines(path)), _raise, 0):
        pass


FASTQ_METHODS: dict[str, Callable[[Path, Path], None]] = {
    "pysam.FastxFile (reference)": _pysam_raw,
    "read_tokens (mambadna.io)": _fastq_tokens,
    "read_records (mambadna.io)": _fastq_records,
    "read_tokens, Python block parser": _fastq_tokens_python,
    "line-by-line parser (before)": _line_by_line,
    "tokenize (write_token_store)": _tokenize,
}


def run_fastq(reads: int, repeats: int, workdir: Path | None) -> dict:
    """Generate the FASTQ (plain and gzip -6), time every method on both; return a dict."""
    import gzip

    load_start = _load()
    root = Path(tempfile.mkdtemp(prefix="mambadna-bench-", dir=workdir))
    try:
        plain = root / "reads.fq"
        size = generate_fastq(plain, reads)
        packed = root / "reads.fq.gz"
        with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        _warm_imports()
        results = {}
        for label, path in (("plain", plain), ("gzip", packed)):
            path.read_bytes()
            times: dict[str, list[float]] = {name: [] for name in FASTQ_METHODS}
            for _ in range(repeats):  # round robin: a burst of load hits every method alike
                for name, method in FASTQ_METHODS.items():
                    times[name] += _time(method, path, root, 1, time.process_time)
            for name, seconds in times.items():
                results[f"{name}, {label}"] = {"seconds": seconds,
                                               "reads_per_s": reads / min(seconds)}
            base = results[f"pysam.FastxFile (reference), {label}"]["reads_per_s"]
            for name in FASTQ_METHODS:
                entry = results[f"{name}, {label}"]
                entry["ratio_vs_pysam"] = entry["reads_per_s"] / base
        return {"benchmark": "FASTQ -> records and tokens, one core", "clock": "process CPU",
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": _machine(), "load_average_start": load_start,
                "load_average_end": _load(), "file_bytes": size, "reads": reads,
                "read_length": 150, "repeats": repeats, "results": results}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def format_fastq_table(report: dict) -> str:
    lines = [f"FASTQ: {report['reads']:,} reads of 150 bp ({report['file_bytes'] / 1e6:.1f} MB),"
             f" best of {report['repeats']}, one core ({report['machine']['cpu']})",
             f"{'method':<44} {'reads/s':>10} {'seconds':>9} {'x pysam':>8}"]
    for name, entry in report["results"].items():
        lines.append(f"{name:<44} {entry['reads_per_s']:>10,.0f} "
                     f"{min(entry['seconds']):>9.3f} "
                     f"{entry['ratio_vs_pysam']:>8.2f}")
    return "\n".join(lines)


def format_table(report: dict) -> str:
    lines = [f"FASTA -> tokens: {report['file_bytes'] / 1e6:.1f} MB, {report['records']} "
             f"records, median of {report['repeats']}, one core ({report['machine']['cpu']})",
             f"{'method':<44} {'MB/s':>8} {'seconds':>9} {'x baseline':>11}"]
    for name, entry in report["results"].items():
        lines.append(f"{name:<44} {entry['mb_per_s']:>8.1f} "
                     f"{statistics.median(entry['seconds']):>9.3f} "
                     f"{entry['ratio_vs_baseline']:>11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=120, help="FASTA size (default 120)")
    parser.add_argument("--records", type=int, default=4, help="records (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (default 3)")
    parser.add_argument("--cpu", type=int, default=0, help="core to pin to (default 0)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for temp files")
    parser.add_argument("--compressed", action="store_true",
                        help="also time gzip and bgzip inputs (MB/s of the uncompressed size)")
    parser.add_argument("--fastq", type=int, default=0, metavar="READS",
                        help="benchmark FASTQ of READS 150-bp reads instead (plain and gzip)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if args.fastq:
        report = run_fastq(args.fastq, args.repeats, args.workdir)
        print(format_fastq_table(report))
    else:
        report = run(args.size_mb, args.records, args.repeats, args.workdir, args.compressed)
        print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
