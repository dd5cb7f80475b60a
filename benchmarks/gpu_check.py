"""One device call's worth of checks and timings of the Triton selective scan (development tool).

    python benchmarks/gpu_check.py [--variant default --variant chunk=128,fwd_warps=4 ...]
                                   [--shapes ...] [--kernels default] [--model paper-7m]
                                   [--json out.json]

For every tiling variant and shape: forward and forward+backward median time, and the outputs
and gradients of the variant compared with the first variant's on the same inputs (a variant
that races or drops a tile shows up as a mismatch); then the registers and spills of each
compiled kernel. A variant is a name of the measured-best table (``TUNED`` in
kernels/selective_scan/config.py: default, low-memory, triton) and/or ScanConfig changes,
comma-separated (``triton,chunk=128``). Prints a short table last. docs/runlog.md records what
each variant predicted and measured (with the names the log uses for them).
"""

from __future__ import annotations

import argparse
import json
import time

import scan as bench  # benchmarks/scan.py
import torch

from mambadna.kernels.launch import resident_programs
from mambadna.kernels.selective_scan import triton as triton_scan
from mambadna.kernels.selective_scan.config import scan_config


def _grads(x: dict, dout: torch.Tensor) -> dict:
    from mambadna.kernels import selective_scan

    leaves = bench._leaves(x)
    out = selective_scan(**leaves)
    out.backward(dout)
    res = {"out": out.detach()}
    res.update({k: v.grad for k, v in leaves.items() if isinstance(v, torch.Tensor)})
    return res


def _resident(kernel) -> int | None:
    """Programs of a compiled kernel resident per SM (None if the launch did not say)."""
    regs, meta = getattr(kernel, "n_regs", None), getattr(kernel, "metadata", None)
    if regs is None or meta is None:
        return None
    return resident_programs(regs, meta.num_warps, meta.shared)


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def run(variants, shapes, n_state=16) -> list[dict]:
    from mambadna.kernels import selective_scan

    rows = []
    for shape in shapes:
        x = bench.make_inputs(*shape, n_state)
        dout = torch.randn_like(x["u"])
        baseline = None
        for name in variants:
            with scan_config(bench.parse_config(name)) as cfg:
                t0 = time.perf_counter()
                got = _grads(x, dout)  # also compiles
                compile_s = time.perf_counter() - t0
                if baseline is None:
                    baseline = got
                worst = max(_rel(got[k], baseline[k]) for k in got)
                row = dict(variant=name, shape=list(shape), compile_s=compile_s,
                           vs_first=worst, fwd_ms=bench.time_forward(selective_scan, x),
                           fwd_bwd_ms=bench.time_forward_backward(selective_scan, x),
                           config=repr(cfg))
            row["regs"] = {role: (getattr(k, "n_regs", None), getattr(k, "n_spills", None),
                                  _resident(k))
                           for role, k in triton_scan.compiled_kernels.items()}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del x, dout, baseline
        torch.cuda.empty_cache()
    return rows


def kernel_times(shape, variant: str = "default", n_state: int = 16, reps: int = 3) -> dict:
    """Milliseconds per call of each kernel in one forward+backward (torch.profiler, mean of
    ``reps`` steady-state calls): which pass the time goes to."""
    from torch.profiler import ProfilerActivity, profile

    from mambadna.kernels import selective_scan

    x = bench._leaves(bench.make_inputs(*shape, n_state))
    dout = torch.randn_like(x["u"])
    leaves = [v for v in x.values() if isinstance(v, torch.Tensor)]
    with scan_config(bench.parse_config(variant)):
        selective_scan(**x).backward(dout)  # compile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                for leaf in leaves:  # fresh gradients: accumulating them would add kernels
                    leaf.grad = None
                selective_scan(**x).backward(dout)
            torch.cuda.synchronize()
    # Kernels in launch order: the forward's summary and output runs share one name.
    events = sorted((ev for ev in prof.events()
                     if ev.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda ev: ev.time_range.start)
    per_rep = len(events) // reps
    times: dict[str, float] = {}
    for i, ev in enumerate(events[:per_rep * reps]):
        key = f"{i % per_rep:02d} {ev.name[:40]}"
        times[key] = times.get(key, 0.0) + ev.device_time / 1000 / reps
    row = dict(variant=variant, shape=list(shape),
               kernels_ms={k: round(v, 4) for k, v in times.items() if v >= 0.005})
    print(json.dumps(row), flush=True)
    return row


def model_check(preset: str = "paper-7m", length: int = 1 << 20) -> dict:
    """One language-model training step (forward + backward) of a preset at one context length.

    bf16 autocast and per-block activation checkpointing, as training runs it; the second of
    two steps is timed. (Imports the model package, which a kernel-only checkout may lack.)
    """
    from mambadna.model import MambaDNA, ModelConfig, lm_loss

    cfg = ModelConfig.from_preset(preset, gradient_checkpointing=True)
    model = MambaDNA(cfg).cuda().train()
    tokens = torch.randint(5, 9, (1, length), device="cuda")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm_loss(model(tokens), tokens)
        loss.backward()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    row = dict(preset=preset, L=length, step_s=times[-1], loss=loss.item(),
               peak_GiB=torch.cuda.max_memory_allocated() / 2**30,
               bases_per_s=length / times[-1])
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="also run one training step of PRESET")
    parser.add_argument("--variant", action="append", default=None,
                        help="a variant to time (repeatable; default: default; none: none)")
    parser.add_argument("--shapes", default="1x1024x65536,8x1024x4096,1x1024x1048576")
    parser.add_argument("--kernels", default=None,
                        help="variants whose per-kernel times to print (at every shape), "
                             "separated by ';'")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.model:
        model_check(args.model)
    shapes = [bench._shape(s) for s in args.shapes.split(",") if s]
    for name in (args.kernels or "").split(";"):
        for shape in shapes if name else ():
            kernel_times(shape, name)
    rows = run([v for v in args.variant or ["default"] if v != "none"], shapes)
    print(f"{'variant':>10} {'batch,dim,L':>18} {'fwd ms':>8} {'f+b ms':>8} {'vs first':>9}  regs")
    for r in rows:
        regs = " ".join(f"{k.split()[0][:4]}{'S' if 'summary' in k else ''}:{v[0]}/{v[1]}/{v[2]}"
                        for k, v in r["regs"].items())
        print(f"{r['variant']:>10} {','.join(map(str, r['shape'])):>18} {r['fwd_ms']:8.3f} "
              f"{r['fwd_bwd_ms']:8.3f} {r['vs_first']:9.1e}  {regs}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
