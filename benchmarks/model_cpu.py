"""CPU forward throughput of a MambaDNA preset against Hugging Face's pure-PyTorch Mamba.

    python benchmarks/model_cpu.py [--preset paper-1.4m --length 16384 --batch 1]
                                   [--threads 2 --repeats 3 --json model_bench.json]
                                   [--no-baseline] [--allocator retain|default]

Builds the preset with a fixed seed, saves it, and runs each implementation in its own process
(so that peak memory is its own): mambadna's model, and ``transformers``' MambaForCausalLM
loaded with the SAME weights (no CUDA kernels: its sequential PyTorch scan, what a user without
mamba-ssm gets). Both run in inference mode on the same random bases. Reported per
implementation: best wall time of a forward pass, bases/s (batch * length / time), peak resident
memory of the process, the increase of resident memory during the forward passes, and the
largest difference between the two implementations' logits (they compute the same function).
``transformers`` is optional: without it the baseline row says so and is skipped.

The floor (printed last, with each implementation's ratio to it): the model's matrix products
at the GEMM rate one core of this machine reaches (the best of a square product and the model's
own projection shapes), plus one exp per state update at the rate torch's vectorised exp reaches
on one core on an in-cache buffer, both times the number of threads (perfect scaling: measured
multi-thread rates on a loaded machine are lower and would flatter the ratio). Every other cost
(the recurrence's multiply-adds, the convolution, norms, memory traffic) is left out, so no
implementation can beat it.

``--allocator retain`` (the default) runs every worker, baseline included, with
``mambadna.allocator.retain_freed_memory()``, as the command line does; ``default`` leaves
glibc's malloc as it is (each large tensor then arrives as fresh pages; see that module).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from mambadna.allocator import retain_freed_memory
from mambadna.alphabet import A, T
from mambadna.errors import ConfigError
from mambadna.model.config import ModelConfig
from mambadna.model.io import load_model
from mambadna.model.network import MambaDNA

IMPLEMENTATIONS = ("mambadna", "transformers")
WORKERS = (*IMPLEMENTATIONS, "floor")


def to_transformers(model: MambaDNA):
    """A ``transformers`` MambaForCausalLM holding ``model``'s weights (same outputs)."""
    from transformers import MambaConfig, MambaForCausalLM

    cfg = model.config
    if cfg.bidirectional:
        raise ConfigError("transformers' Mamba has no bidirectional variant")
    hf = MambaForCausalLM(MambaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
        state_size=cfg.d_state, expand=cfg.expand, conv_kernel=cfg.d_conv,
        time_step_rank=cfg.dt_rank, layer_norm_epsilon=cfg.rms_norm_eps, use_bias=False,
        use_conv_bias=True, residual_in_fp32=True, tie_word_embeddings=True,
        use_mambapy=False))
    ours = model.state_dict()
    state = {"backbone.embeddings.weight": ours["embedding.weight"],
             "lm_head.weight": ours["embedding.weight"],
             "backbone.norm_f.weight": ours["norm_f.weight"]}
    renames = {"norm.weight": "norm.weight", "mixer.in_proj.weight": "mixer.in_proj.weight",
               "mixer.ssm.conv_bias": "mixer.conv1d.bias",
               "mixer.ssm.x_proj.weight": "mixer.x_proj.weight",
               "mixer.ssm.dt_proj.weight": "mixer.dt_proj.weight",
               "mixer.ssm.dt_proj.bias": "mixer.dt_proj.bias", "mixer.ssm.A_log": "mixer.A_log",
               "mixer.ssm.D": "mixer.D", "mixer.out_proj.weight": "mixer.out_proj.weight"}
    for i in range(cfg.n_layer):
        for ours_name, hf_name in renames.items():
            state[f"backbone.layers.{i}.{hf_name}"] = ours[f"layers.{i}.{ours_name}"]
        conv = ours[f"layers.{i}.mixer.ssm.conv_weight"]  # (d_inner, d_conv)
        state[f"backbone.layers.{i}.mixer.conv1d.weight"] = conv[:, None, :]
    hf.load_state_dict(state, strict=True)
    return hf.eval()


def model_counts(cfg: ModelConfig, positions: int) -> dict:
    """Matrix-product flops and state updates of one forward pass over ``positions`` bases."""
    d_model, d_inner, n_state, rank = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank
    directions = 2 if cfg.bidirectional else 1
    per_layer = (2 * d_model * 2 * d_inner  # in_proj
                 + directions * (2 * d_inner * (rank + 2 * n_state)  # x_proj
                                 + 2 * rank * d_inner)  # dt_proj
                 + 2 * d_inner * d_model)  # out_proj
    flops = positions * (cfg.n_layer * per_layer + 2 * d_model * cfg.vocab_size)  # + LM head
    updates = positions * cfg.n_layer * directions * d_inner * n_state
    return {"gemm_flops": flops, "state_updates": updates}


def _best_seconds(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_rates(cfg: ModelConfig, threads: int) -> dict:
    """GEMM flop rate and vectorised exp rate of one core, scaled to ``threads`` cores."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    rates = {}
    shapes = {"square 1024": (1024, 1024, 1024),
              "in_proj": (16_384, cfg.d_model, 2 * cfg.d_inner),
              "out_proj": (16_384, cfg.d_inner, cfg.d_model)}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
        rates[name] = 2 * m * k * n / _best_seconds(lambda a=a, b=b: torch.mm(a, b))
    x = torch.randn(1 << 16, generator=gen) - 2  # 256 KiB: stays in cache, as the state does
    out = torch.empty_like(x)
    exp_seconds = _best_seconds(lambda: [torch.exp(x, out=out) for _ in range(64)]) / 64
    return {"gemm_flops_per_s": threads * max(rates.values()),
            "one_core_gemm_flops_per_s_by_shape": rates,
            "exp_per_s": threads * x.numel() / exp_seconds}


def floor_seconds(cfg: ModelConfig, positions: int, rates: dict) -> dict:
    counts = model_counts(cfg, positions)
    gemm = counts["gemm_flops"] / rates["gemm_flops_per_s"]
    exp = counts["state_updates"] / rates["exp_per_s"]
    return {**counts, **rates, "gemm_seconds": gemm, "exp_seconds": exp,
            "floor_seconds": gemm + exp}


def _rss_mib() -> float:
    """Current resident memory of this process (MiB), from /proc (Linux) or ru_maxrss."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_rss_mib()


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _worker(impl: str, workdir: Path, threads: int, repeats: int, allocator: str) -> dict:
    """Time ``repeats`` forward passes of one implementation; save its logits; return figures."""
    if allocator == "retain":
        retain_freed_memory()
    torch.set_num_threads(threads)
    model = load_model(workdir / "model")
    if impl == "floor":
        positions = int(np.load(workdir / "tokens.npy").size)
        return {"implementation": impl,
                **floor_seconds(model.config, positions, measure_rates(model.config, threads))}
    if impl == "transformers":
        try:
            model = to_transformers(model)
        except ImportError as err:
            return {"implementation": impl, "skipped": f"transformers is not installed ({err})"}
        def forward(t):
            return model(input_ids=t, use_cache=False).logits
    else:
        forward = model
    tokens = torch.from_numpy(np.load(workdir / "tokens.npy")).long()
    times = []
    with torch.inference_mode():
        forward(tokens[:, :256])  # warm-up: first-call allocations, lazy imports
        rss_before = _rss_mib()
        for _ in range(repeats):
            start = time.perf_counter()
            logits = forward(tokens)
            times.append(time.perf_counter() - start)
    np.save(workdir / f"logits-{impl}.npy", logits.float().numpy())
    best = min(times)
    return {"implementation": impl, "seconds": best, "seconds_all": times,
            "bases_per_s": tokens.numel() / best, "peak_rss_mib": _peak_rss_mib(),
            "forward_rss_increase_mib": _peak_rss_mib() - rss_before}


def _run_worker(impl: str, workdir: Path, threads: int, repeats: int, allocator: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--workdir",
           str(workdir), "--threads", str(threads), "--repeats", str(repeats),
           "--allocator", allocator]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"implementation": impl, "skipped": f"worker failed: {done.stderr.strip()[-500:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(preset: str, length: int, batch: int, threads: int, repeats: int,
        baseline: bool, allocator: str = "retain") -> dict:
    """Run the benchmark; returns the JSON-ready result (see module docstring)."""
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset(preset))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="mambadna-bench-") as tmp:
        workdir = Path(tmp)
        model.save_pretrained(workdir / "model")
        np.save(workdir / "tokens.npy", rng.integers(A, T + 1, (batch, length), dtype=np.int64))
        impls = IMPLEMENTATIONS if baseline else IMPLEMENTATIONS[:1]
        rows = [_run_worker(impl, workdir, threads, repeats, allocator) for impl in impls]
        floor = _run_worker("floor", workdir, threads, repeats, allocator)
        for row in rows:
            if "skipped" not in row and "floor_seconds" in floor:
                row["times_floor"] = row["seconds"] / floor["floor_seconds"]
        if all("skipped" not in row for row in rows) and len(rows) == 2:
            ours, theirs = (np.load(workdir / f"logits-{i}.npy") for i in impls)
            rows[1]["max_abs_logit_diff"] = float(np.abs(ours - theirs).max())
            rows[1]["speedup_of_mambadna"] = rows[1]["seconds"] / rows[0]["seconds"]
    return {"benchmark": "model forward on CPU", "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, "
                       f"{threads} threads used", "python": platform.python_version(),
            "torch": torch.__version__, "preset": preset, "parameters": model.num_parameters(),
            "length": length, "batch": batch, "repeats": repeats, "allocator": allocator,
            "results": rows,
            "floor": floor}


def _table(result: dict) -> str:
    lines = [f"{result['preset']} ({result['parameters']:,} parameters), batch {result['batch']}"
             f" x L {result['length']:,}, {result['machine']}, torch {result['torch']}, "
             f"allocator {result['allocator']}",
             f"{'implementation':<14} {'seconds':>8} {'bases/s':>9} {'peak RSS MiB':>13} "
             f"{'fwd +RSS MiB':>13} {'x floor':>8}"]
    for row in result["results"]:
        if "skipped" in row:
            lines.append(f"{row['implementation']:<14} skipped: {row['skipped']}")
            continue
        lines.append(f"{row['implementation']:<14} {row['seconds']:>8.2f} "
                     f"{row['bases_per_s']:>9.0f} {row['peak_rss_mib']:>13.0f} "
                     f"{row['forward_rss_increase_mib']:>13.0f} "
                     f"{row.get('times_floor', float('nan')):>8.1f}")
        if "speedup_of_mambadna" in row:
            lines.append(f"mambadna is {row['speedup_of_mambadna']:.2f}x faster; max |logit "
                         f"difference| {row['max_abs_logit_diff']:.2e}")
    floor = result["floor"]
    if "floor_seconds" in floor:
        lines.append(
            f"floor {floor['floor_seconds']:.3f} s = GEMM {floor['gemm_flops'] / 1e9:.1f} GFLOP at "
            f"{floor['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s ({floor['gemm_seconds']:.3f} s) + "
            f"{floor['state_updates'] / 1e6:.0f} M exps at {floor['exp_per_s'] / 1e9:.2f} G/s "
            f"({floor['exp_seconds']:.3f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper-1.4m")
    parser.add_argument("--length", type=int, default=16_384)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="model_bench.json", help="where to write the result")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the transformers baseline")
    parser.add_argument("--allocator", choices=("retain", "default"), default="retain",
                        help="glibc malloc as the command line sets it, or left as it is")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, Path(args.workdir), args.threads, args.repeats,
                                 args.allocator)))
        return
    result = run(args.preset, args.length, args.batch, args.threads, args.repeats,
                 not args.no_baseline, args.allocator)
    print(_table(result))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
