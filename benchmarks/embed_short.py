"""Benchmark ``embed`` on many short records: ``python benchmarks/embed_short.py [--json PATH]``.

Writes a FASTA of --reads records of --read-length bases (random, lengths varied by up to
-/+ 20%) and embeds it end to end with ``mambadna.embed`` (reading, batching, the model,
pooling, Parquet writing) with a randomly initialised --preset model, --repeats times; the
median wall time and bases/s are reported. Records shorter than the window are where batching
matters: each is one window, and the pipeline packs them up to --batch-size full windows of
bases per forward pass (before: --batch-size windows per pass, however short).

Only public API is used, so the same script measures an older checkout too: run it with
``PYTHONPATH=OLD_CHECKOUT`` for the "before" figure, on the same machine in the same session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mambadna as md
from mambadna.model import MambaDNA, ModelConfig


def write_reads(path: Path, reads: int, length: int, seed: int = 0) -> int:
    """A FASTA of ``reads`` random records around ``length`` bases; returns the bases."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    total = 0
    with open(path, "w") as out:
        for i in range(reads):
            n = int(length * rng.uniform(0.8, 1.2))
            total += n
            out.write(f">read{i}\n{letters[rng.integers(0, 4, n)].tobytes().decode()}\n")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--read-length", type=int, default=150)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="", help="e.g. before / after, kept in the JSON")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset(args.preset))
    times = []
    with tempfile.TemporaryDirectory(prefix="mambadna-bench-") as folder:
        fasta = Path(folder) / "reads.fa"
        bases = write_reads(fasta, args.reads, args.read_length)
        for repeat in range(args.repeats + 1):  # the first run warms up
            out = Path(folder) / f"e{repeat}.parquet"
            started = time.perf_counter()
            md.embed(model, fasta, out, window=args.window, min_window=1,
                     batch_size=args.batch_size, device=args.device, progress=False)
            if repeat:
                times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    result = {"label": args.label, "mambadna": md.__version__, "preset": args.preset,
              "reads": args.reads, "read_length": args.read_length, "bases": bases,
              "window": args.window, "batch_size": args.batch_size, "device": args.device,
              "threads": torch.get_num_threads(), "seconds": seconds,
              "bases_per_second": bases / seconds, "times": times,
              "machine": f"{platform.machine()} {os.cpu_count()} cpus {platform.processor()}",
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    print(f"| {args.label or 'run'} | {args.preset} | {args.reads} x ~{args.read_length} | "
          f"window {args.window}, batch {args.batch_size} | {seconds:.2f} s | "
          f"{bases / seconds:,.0f} bases/s |")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
