"""One device call's worth of checks and timings of the Triton selective scan (development tool).

    python benchmarks/gpu_check.py [--variants default,fw2,dot,...] [--shapes ...]
                                   [--json out.json]

For every tiling variant (a ScanConfig) and shape: forward and forward+backward median time,
and the outputs and gradients of the variant compared with the first variant's on the same
inputs (a variant that races or drops a tile shows up as a mismatch); then the registers and
spills of each compiled kernel. Prints a short table last. kernels/README.md records what each
variant predicted and measured.
"""

from __future__ import annotations

import argparse
import json
import time

import scan as bench  # benchmarks/scan.py
import torch

from mambadna.kernels.selective_scan import triton as triton_scan

# Changes to the current ScanConfig defaults. Variants added in earlier sessions are named for
# how they differed from the defaults of their day (kernels/README.md has each run), so some
# now repeat a default: "bits" and "fmr128" are the fourth session's defaults, "old" its
# predecessor's forward (with float picks in the backward's rerun too).
VARIANTS = {
    "default": {},
    "fw4": dict(fwd_warps=4),
    "bw2": dict(bwd_warps=2),
    "fc2": dict(fwd_channels_per_thread=2),
    "bc2": dict(bwd_channels_per_thread=2),
    "c2": dict(fwd_channels_per_thread=2, bwd_channels_per_thread=2),
    "pps8": dict(programs_per_sm=8, bwd_programs_per_sm=8),
    "pps32": dict(programs_per_sm=32, bwd_programs_per_sm=32),
    "ch512": dict(chunk=512),
    "noseg": dict(segments=1),
    "ns1": dict(stages=1),
    "ns4": dict(stages=4),
    "ns3": dict(stages=3),
    "ns3fw1": dict(stages=3, fwd_warps=1),
    "fw1": dict(fwd_warps=1),
    "fw4ns3": dict(fwd_warps=4, stages=3),
    "t4ns1": dict(tile=4, stages=1),
    "bns2": dict(bwd_stages=2),
    "bns3": dict(bwd_stages=3),
    "fw2ns1": dict(fwd_warps=2, stages=1),
    "fpps32": dict(programs_per_sm=32),
    "bpps24": dict(bwd_programs_per_sm=24),
    "bpps12": dict(bwd_programs_per_sm=12),
    "bpps16": dict(bwd_programs_per_sm=16),
    "bits": dict(bit_picks=True),
    "bitsns3": dict(bit_picks=True, stages=3),
    "bn3mr128": dict(bit_picks=True, stages=3, fwd_maxnreg=128),
    "bn3s96": dict(bit_picks=True, stages=3, fwd_summary_maxnreg=96),
    "bn3mr128s96": dict(bit_picks=True, stages=3, fwd_maxnreg=128, fwd_summary_maxnreg=96),
    "nobp": dict(bwd_prefetch=False),
    "ft0": dict(fwd_turns=False),
    "ch128": dict(chunk=128),
    "ch64": dict(chunk=64),
    "ch32": dict(chunk=32, min_chunk=32),
    "ch256": dict(chunk=256),  # the sixth session's default
    "fc64": dict(fwd_cut=64),  # the forward cut in chunks of 64 too (timed as "ch64" first)
    "ch128s456": dict(chunk=128, segments=456),  # the 256-chunk forward's cut, X every 128
    "fs80": dict(fwd_summary_maxnreg=80),
    "old": dict(bit_picks=False, stages=2, fwd_maxnreg=None),
    "bns3mr168": dict(bwd_stages=3, bwd_maxnreg=168),
    **{f"bs{n}": dict(bwd_segments=n) for n in (6, 16, 33, 49, 66, 98, 147)},
    "fmr128": dict(fwd_maxnreg=128),
    "bmr128": dict(bwd_maxnreg=128),
    "mr128": dict(fwd_maxnreg=128, bwd_maxnreg=128),
    "bsw2": dict(bwd_summary_warps=2),
    "bsw4": dict(bwd_summary_warps=4),
    "fsw2": dict(fwd_summary_warps=2),  # the fifth session's default
    "fsw4": dict(fwd_summary_warps=4),
    "tri": dict(gluon=False),  # the Triton kernels everywhere (the sixth session's first)
    "s96": dict(fwd_summary_maxnreg=96),
    "s80": dict(fwd_summary_maxnreg=80),
    "ns2": dict(stages=2),
    **{f"s{n}": dict(segments=n)
       for n in (49, 98, 99, 132, 198, 264, 316, 396, 456, 528, 586, 820, 1056)},
}


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
    return triton_scan.resident_programs(regs, meta.num_warps, meta.shared)


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
            triton_scan.set_config(triton_scan.ScanConfig(**VARIANTS[name]))
            t0 = time.perf_counter()
            got = _grads(x, dout)  # also compiles
            compile_s = time.perf_counter() - t0
            if baseline is None:
                baseline = got
            worst = max(_rel(got[k], baseline[k]) for k in got)
            row = dict(variant=name, shape=list(shape), compile_s=compile_s, vs_first=worst,
                       fwd_ms=bench.time_forward(selective_scan, x),
                       fwd_bwd_ms=bench.time_forward_backward(selective_scan, x))
            row["regs"] = {role: (getattr(k, "n_regs", None), getattr(k, "n_spills", None),
                                  _resident(k))
                           for role, k in triton_scan.compiled_kernels.items()}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del x, dout, baseline
        torch.cuda.empty_cache()
    triton_scan.set_config(triton_scan.ScanConfig())
    return rows


def kernel_times(shape, variant: str = "default", n_state: int = 16, reps: int = 3) -> dict:
    """Milliseconds per call of each kernel in one forward+backward (torch.profiler, mean of
    ``reps`` steady-state calls): which pass the time goes to."""
    from torch.profiler import ProfilerActivity, profile

    from mambadna.kernels import selective_scan

    triton_scan.set_config(triton_scan.ScanConfig(**VARIANTS[variant]))
    x = bench._leaves(bench.make_inputs(*shape, n_state))
    dout = torch.randn_like(x["u"])
    selective_scan(**x).backward(dout)  # compile
    torch.cuda.synchronize()
    leaves = [v for v in x.values() if isinstance(v, torch.Tensor)]
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
    triton_scan.set_config(triton_scan.ScanConfig())
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
    parser.add_argument("--variants", default="default", help="variants to time, or none")
    parser.add_argument("--shapes", default="1x1024x65536,8x1024x4096,1x1024x1048576")
    parser.add_argument("--kernels", default=None,
                        help="variants whose per-kernel times to print (at every shape)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.model:
        model_check(args.model)
    shapes = [bench._shape(s) for s in args.shapes.split(",") if s]
    for name in (args.kernels or "").split(","):
        for shape in shapes if name else ():
            kernel_times(shape, name)
    rows = run([v for v in args.variants.split(",") if v and v != "none"], shapes)
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
