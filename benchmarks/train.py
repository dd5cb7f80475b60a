"""Pretraining throughput and peak memory per model size and context length.

    python benchmarks/train.py                      # paper-1.4m, paper-7m x 2^14, 2^17, 2^20
    python benchmarks/train.py --preset paper-7m --seq-len 1048576 --steps 10
    python benchmarks/train.py --device cpu --preset tiny --seq-len 1024 --steps 2

Each configuration runs the training step of ``mambadna pretrain`` on random DNA tokens:
next-base loss, AdamW with the decay groups of training, gradient clipping, bf16 autocast on
CUDA, per-block gradient checkpointing from 2^16 bases per batch unless told otherwise.
``--warmup`` untimed steps come first (Triton compilation and autotuning), then ``--steps``
timed ones. It reports bases per second and ``torch.cuda.max_memory_allocated``. A batch holds
``--tokens-per-step`` bases (2^20 by default: batch 1 at 2^20, as in the paper). Every
configuration runs in its own try/except: an out-of-memory error is recorded, not fatal.
Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

DEFAULT_PRESETS = ("paper-1.4m", "paper-7m")
DEFAULT_LENGTHS = (2**14, 2**17, 2**20)
TARGET = {"preset": "paper-7m", "seq_len": 2**20, "max_gib": 40.0, "min_bases_per_s": 1e6}


@dataclass
class BenchResult:
    """One configuration: sizes, outcome, throughput and memory."""

    preset: str
    seq_len: int
    batch_size: int
    checkpointing: bool
    precision: str
    status: str = "ok"  # ok | oom | error
    parameters: int = 0
    seconds_per_step: float = math.nan
    bases_per_second: float = math.nan
    peak_memory_gib: float = math.nan
    final_loss: float = math.nan
    error: str = ""


@dataclass
class BenchOptions:
    presets: tuple[str, ...] = DEFAULT_PRESETS
    seq_lens: tuple[int, ...] = DEFAULT_LENGTHS
    tokens_per_step: int = 2**20
    batch_size: int | None = None  # overrides tokens_per_step
    steps: int = 5
    warmup: int = 2
    checkpointing: str = "auto"  # auto (from checkpoint_from bases per batch) | on | off
    checkpoint_from: int = 2**16
    device: str = "auto"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _train_step(model, optimizer, tokens, autocast: bool) -> torch.Tensor:
    """One optimizer step as LanguageModelModule + Lightning run it."""
    from mambadna.model import lm_loss

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        loss = lm_loss(model(tokens), tokens)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, seq_len: int, options: BenchOptions) -> BenchResult:
    """Train ``options.warmup + options.steps`` steps of one configuration; never raises."""
    from mambadna.model import MambaDNA, ModelConfig
    from mambadna.train.optim import adamw, decay_groups

    device = _device(options.device)
    cuda = device.type == "cuda"
    batch = options.batch_size or max(1, options.tokens_per_step // seq_len)
    checkpointing = (batch * seq_len >= options.checkpoint_from
                     if options.checkpointing == "auto"
                     else options.checkpointing == "on")
    result = BenchResult(preset, seq_len, batch, checkpointing, "bf16-mixed" if cuda else "32")
    model = optimizer = tokens = None
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(0)
        config = ModelConfig.from_preset(preset, gradient_checkpointing=checkpointing)
        model = MambaDNA(config).to(device).train()
        result.parameters = model.num_parameters()
        optimizer = adamw(decay_groups(model, 0.1), 1e-3, (0.9, 0.95))
        generator = torch.Generator(device="cpu").manual_seed(1)
        tokens = torch.randint(5, 9, (batch, seq_len), generator=generator).to(device)
        for _ in range(options.warmup):
            _train_step(model, optimizer, tokens, cuda)
        _sync(device)
        start = time.perf_counter()
        for _ in range(options.steps):
            loss = _train_step(model, optimizer, tokens, cuda)
        _sync(device)
        elapsed = time.perf_counter() - start
        result.seconds_per_step = elapsed / options.steps
        result.bases_per_second = batch * seq_len * options.steps / elapsed
        result.final_loss = float(loss)
    except torch.cuda.OutOfMemoryError as err:
        result.status, result.error = "oom", str(err).splitlines()[0][:300]
    except Exception as err:  # recorded, so one failing configuration does not end the run
        out_of_memory = "out of memory" in str(err).lower()
        result.status = "oom" if out_of_memory else "error"
        result.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    finally:
        if cuda:
            result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
        del model, optimizer, tokens
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return result


def target_note(results: list[BenchResult]) -> str:
    """Whether paper-7m at 2^20 with batch 1 met < 40 GiB and >= 1 M bases/s, and by how much."""
    hits = [r for r in results if r.preset == TARGET["preset"] and r.seq_len == TARGET["seq_len"]
            and r.batch_size == 1]
    if not hits:
        return "target (paper-7m, 2^20, batch 1) not measured"
    r = hits[0]
    if r.status != "ok":
        return f"target missed: paper-7m at 2^20 failed ({r.status}: {r.error})"
    memory_ok = r.peak_memory_gib < TARGET["max_gib"]
    speed_ok = r.bases_per_second >= TARGET["min_bases_per_s"]
    over = r.peak_memory_gib - TARGET["max_gib"]
    short = 100 * (1 - r.bases_per_second / TARGET["min_bases_per_s"])
    parts = [f"peak {r.peak_memory_gib:.1f} GiB (target < 40: "
             f"{'met' if memory_ok else f'missed by {over:.1f} GiB'})",
             f"{r.bases_per_second / 1e6:.2f} M bases/s (target >= 1: "
             f"{'met' if speed_ok else f'missed by {short:.0f}%'})"]
    return "target paper-7m at 2^20, batch 1: " + "; ".join(parts)


def format_table(results: list[BenchResult]) -> str:
    head = (f"{'preset':<11} {'seq_len':>9} {'batch':>5} {'ckpt':>4} {'status':>6} "
            f"{'s/step':>8} {'bases/s':>12} {'peak GiB':>9} {'loss':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.preset:<11} {r.seq_len:>9} {r.batch_size:>5} "
                     f"{'on' if r.checkpointing else 'off':>4} {r.status:>6} "
                     f"{r.seconds_per_step:>8.3f} {r.bases_per_second:>12,.0f} "
                     f"{r.peak_memory_gib:>9.2f} {r.final_loss:>6.3f}")
        if r.error:
            lines.append(f"    {r.error}")
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    info = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "host": platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    return info


def run(options: BenchOptions, log=print) -> dict:
    """Measure every (preset, seq_len); returns the report (environment, results, target)."""
    from mambadna._version import __version__

    device = _device(options.device)
    results = []
    for preset in options.presets:
        for seq_len in options.seq_lens:
            result = measure(preset, seq_len, options)
            log(f"{preset} seq_len {seq_len}: {result.status}, "
                f"{result.bases_per_second:,.0f} bases/s, {result.peak_memory_gib:.2f} GiB")
            results.append(result)
    return {"benchmark": "benchmarks/train.py", "mambadna": __version__,
            "environment": environment(device), "options": asdict(options),
            "results": [_finite(asdict(r)) for r in results], "target": target_note(results)}


def _finite(row: dict) -> dict:
    """NaN (not measured) -> None, so the report is strict JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _parse(argv: list[str] | None) -> tuple[BenchOptions, Path]:
    parser = argparse.ArgumentParser(prog="python benchmarks/train.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", action="append", help="Model preset (repeatable). "
                        f"Default: {', '.join(DEFAULT_PRESETS)}.")
    parser.add_argument("--seq-len", action="append", type=int, help="Context length "
                        "(repeatable). Default: 2^14, 2^17, 2^20.")
    parser.add_argument("--tokens-per-step", type=int, default=2**20,
                        help="Bases per step; batch = this / seq-len (at least 1).")
    parser.add_argument("--batch-size", type=int, help="Fixed batch size instead.")
    parser.add_argument("--steps", type=int, default=5, help="Timed steps.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first.")
    parser.add_argument("--checkpointing", choices=("auto", "on", "off"), default="auto",
                        help="Per-block gradient checkpointing (auto: from 2^16 bases per "
                             "batch).")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:1 or cpu.")
    parser.add_argument("--json", default="train_bench.json", help="Report file.")
    args = parser.parse_args(argv)
    options = BenchOptions(presets=tuple(args.preset or DEFAULT_PRESETS),
                           seq_lens=tuple(args.seq_len or DEFAULT_LENGTHS),
                           tokens_per_step=args.tokens_per_step, batch_size=args.batch_size,
                           steps=args.steps, warmup=args.warmup,
                           checkpointing=args.checkpointing, device=args.device)
    return options, Path(args.json)


def main(argv: list[str] | None = None) -> int:
    options, out = _parse(argv)
    report = run(options, log=lambda line: print(line, file=sys.stderr, flush=True))
    results = [BenchResult(**{k: math.nan if v is None else v for k, v in r.items()})
               for r in report["results"]]
    env = report["environment"]
    print(f"mambadna {report['mambadna']} | torch {env['torch']} | "
          f"{env.get('gpu', env['device'])} | {env['date']}")
    print(format_table(results))
    print(report["target"])
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
