"""Variant scoring throughput: the shared-prefix path against two whole windows per variant.

    python benchmarks/variants.py [--device cpu|cuda|auto] [--preset paper-1.4m]
                                  [--variants N] [--window 1024] [--batch-size 64]
                                  [--no-rc-average] [--json out.json]

Builds a random genome and a VCF of SNVs, indels and multi-allelic records (a fixed mix,
seeded), and scores it with a random model of the preset twice through
``mambadna.pipelines.variants.score_variants``: ``method="shared-prefix"`` (each site's prefix
run once, its state carried into every allele's suffix) and ``method="naive"`` (every allele's
whole window from a zero state). Both run after one warm-up call (on CUDA: Triton compiles),
then ``--repeats`` times each, interleaved; the fastest run of each counts.
Prints a table (variants/s of each, the speed-up, the largest score difference between the
two) and writes the JSON report with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam
import torch

from mambadna.model import MambaDNA, ModelConfig
from mambadna.pipelines.inference import resolve_device
from mambadna.pipelines.variants import score_variants

CONTIG = 200_000


def write_inputs(folder: Path, n_variants: int, window: int, seed: int) -> tuple[Path, Path]:
    """ref.fa (+ .fai) with enough contigs for ``n_variants`` spaced windows, and calls.vcf:
    70 % SNVs, 10 % multi-allelic SNVs, 10 % deletions (1-8 bases), 10 % insertions."""
    rng = np.random.default_rng(seed)
    spacing = max(window // 4, 16)
    per_contig = (CONTIG - 2 * window) // spacing
    n_contigs = -(-n_variants // per_contig)
    contigs = {f"chr{i + 1}": "".join(rng.choice(list("ACGT"), CONTIG))
               for i in range(n_contigs)}
    ref = folder / "ref.fa"
    with open(ref, "w") as handle:
        for name, seq in contigs.items():
            handle.write(f">{name}\n")
            handle.writelines(seq[i:i + 60] + "\n" for i in range(0, len(seq), 60))
    pysam.faidx(str(ref))
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={name},length={CONTIG}>" for name in contigs]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    names = list(contigs)
    for i in range(n_variants):
        name = names[i // per_contig]
        seq = contigs[name]
        p = window + (i % per_contig) * spacing
        kind = rng.random()
        others = [b for b in "ACGT" if b != seq[p]]
        if kind < 0.7:
            ref_allele, alt = seq[p], others[rng.integers(3)]
        elif kind < 0.8:
            ref_allele, alt = seq[p], ",".join(others[:2])
        elif kind < 0.9:
            size = int(rng.integers(1, 9))
            ref_allele, alt = seq[p:p + size + 1], seq[p]
        else:
            ref_allele = seq[p]
            alt = seq[p] + "".join(rng.choice(list("ACGT"), int(rng.integers(1, 9))))
        lines.append(f"{name}\t{p + 1}\tv{i}\t{ref_allele}\t{alt}\t.\tPASS\t.")
    vcf = folder / "calls.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    return ref, vcf


def machine(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def timed(model, ref, vcf, method: str, options: dict, device: torch.device):
    """(seconds, VariantScores) of one score_variants call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = score_variants(model, ref, vcf, method=method, **options)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def run(args) -> dict:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_variants = args.variants or (2000 if device.type == "cuda" else 12)
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset(args.preset)).to(device).eval()
    options = dict(window=args.window, rc_average=args.rc_average,
                   batch_size=args.batch_size, device=str(device), precision=args.precision)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        ref, vcf = write_inputs(Path(folder), n_variants, args.window, args.seed)
        (Path(folder) / "warm").mkdir()
        warm = write_inputs(Path(folder) / "warm", min(n_variants, args.batch_size or 64),
                            args.window, args.seed)
        methods = ("shared-prefix", "naive")
        for method in methods:
            score_variants(model, *warm, method=method, **options)  # on CUDA: Triton compiles
        for _ in range(args.repeats):  # interleaved, so that a busy spell hits both alike
            for method in methods:
                seconds, result = timed(model, ref, vcf, method, options, device)
                best = results.get(method)
                if best is None or seconds < best["seconds"]:
                    results[method] = {"seconds": seconds, "variants": result.n_scored,
                                       "variants_per_s": result.n_scored / seconds,
                                       "allele_windows_run": result.windows_run,
                                       "scores": result.frame["score"].to_numpy()}
    shared, naive = results["shared-prefix"]["scores"], results["naive"]["scores"]
    difference = float(np.nanmax(np.abs(shared - naive)))
    spread = [float(np.nanmin(shared)), float(np.nanmax(shared))]
    for entry in results.values():
        del entry["scores"]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "config": {"preset": args.preset, "window": args.window, "variants": n_variants,
                   "rc_average": args.rc_average,
                   "batch_size": args.batch_size or (64 if device.type == "cuda" else 8),
                   "precision": args.precision, "seed": args.seed,
                   "repeats": args.repeats},
        "results": results,
        "speedup": results["naive"]["seconds"] / results["shared-prefix"]["seconds"],
        "max_score_difference": difference,
        "score_range": spread,
    }


def table(report: dict) -> str:
    cfg, rows = report["config"], report["results"]
    lines = [f"score-variants, {cfg['preset']}, window {cfg['window']}, "
             f"{'both strands' if cfg['rc_average'] else 'forward strand'}, "
             f"{report['machine']['device']} ({report['machine'].get('gpu', 'CPU')}), "
             f"{report['date']}",
             f"{'method':<14} {'variants':>8} {'seconds':>8} {'variants/s':>11} "
             f"{'windows run':>12}"]
    for method, row in rows.items():
        lines.append(f"{method:<14} {row['variants']:>8} {row['seconds']:>8.2f} "
                     f"{row['variants_per_s']:>11.1f} {row['allele_windows_run']:>12}")
    low, high = report["score_range"]
    lines.append(f"speed-up {report['speedup']:.2f}x; largest score difference "
                 f"{report['max_score_difference']:.2e} (scores from {low:.3g} to {high:.3g})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default="paper-1.4m")
    parser.add_argument("--variants", type=int, default=None,
                        help="VCF records (default: 2000 on CUDA, 12 on CPU)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each method; the fastest counts")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 on a loaded machine)")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="allele windows per forward pass (default: 64 on CUDA, 8 on CPU)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--no-rc-average", dest="rc_average", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="variants_bench.json")
    args = parser.parse_args()
    report = run(args)
    print(table(report))
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.json}")


if __name__ == "__main__":
    main()
