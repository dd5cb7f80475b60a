"""Context parallelism on several GPUs: the longest trainable context, bases/s, efficiency.

    python benchmarks/context_parallel.py                 # every GPU: sizes 1, 2, 4, 8
    python benchmarks/context_parallel.py --sizes 1,8 --start 1048576 --max-len 33554432
    torchrun --nproc-per-node 8 benchmarks/context_parallel.py --one --seq-len 16777216
    python benchmarks/context_parallel.py --device cpu --preset tiny --start 256 \
        --max-len 512 --sizes 1,2                         # a smoke test on CPU (gloo)

The sweep (no ``--one``) launches one ``torchrun`` per configuration (``python -m
torch.distributed.run``, the first S GPUs for S ranks): for each context-parallel size S it
doubles the window from ``--start`` until a step fails (out of memory, or ``--timeout``) or
``--max-len`` is passed; the last length that trained is the longest trainable context at S.
A configuration in its own launch means an out-of-memory error on one rank cannot leave the
others waiting in a collective: torchrun ends them all, and the next launch starts clean.

``--one`` is one configuration, run under torchrun: world = replicas x S (``--context-parallel
S``, default the world); every rank builds the preset (per-block activation checkpointing on,
bf16 autocast on CUDA, fused AdamW, DDP over the world) and trains on its segment of batch-1
random windows, as ``pretrain --context-parallel`` does: ``--warmup`` untimed steps, then
``--steps`` timed ones. Rank 0 prints one JSON line: seconds per step, bases/s over the whole
world, peak memory (the largest over the ranks).

Efficiency at length L and size S = bases/s at S / (S x bases/s of one GPU at L), for the
lengths that one GPU also trained. Prints a table; writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

MARK = "CONTEXT_PARALLEL_RESULT "


# ---------------------------------------------------------------------- one configuration


def _train_step(model, optimizer, tokens, context, autocast: bool):
    from mambadna.model import segment_lm_loss

    start, stop = context.bounds(tokens.shape[1])
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(tokens[:, start:stop], context=context)
        share, _, _ = segment_lm_loss(logits, tokens, context)
    (share * context.size).backward()  # DDP averages over replicas x ranks
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return share.detach()


def one(args) -> int:
    """One configuration under torchrun; rank 0 prints the result line."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mambadna.model import MambaDNA, ModelConfig, context_groups, context_sum
    from mambadna.train.optim import adamw, decay_groups

    cuda = args.device != "cpu" and torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    world = dist.get_world_size()
    context = context_groups(args.context_parallel or world)
    torch.manual_seed(0)
    config = ModelConfig.from_preset(args.preset, gradient_checkpointing=True)
    model = MambaDNA(config).to(device).train()
    ddp = DistributedDataParallel(model, device_ids=[local] if cuda else None)
    optimizer = adamw(decay_groups(model, 0.1), 1e-3, (0.9, 0.95), fused=cuda)
    # the same windows on the ranks of a group, other windows for other replicas
    generator = torch.Generator().manual_seed(1 + context.replica)
    tokens = torch.randint(5, 9, (1, args.seq_len), generator=generator, dtype=torch.uint8)
    start, stop = context.bounds(args.seq_len)
    # a rank holds only its segment (and the next base, its last target) on the device
    window = torch.zeros(1, args.seq_len, dtype=torch.uint8, device=device)
    window[:, start:stop + 1] = tokens[:, start:stop + 1].to(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        _train_step(ddp, optimizer, window, context, cuda)
    if cuda:
        torch.cuda.synchronize(device)
    dist.barrier()
    began = time.perf_counter()
    for _ in range(args.steps):
        loss = _train_step(ddp, optimizer, window, context, cuda)
    if cuda:
        torch.cuda.synchronize(device)
    dist.barrier()
    elapsed = time.perf_counter() - began
    loss = context_sum(loss, context)
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0],
                        device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        result = {"preset": args.preset, "seq_len": args.seq_len, "world": world,
                  "context_parallel": context.size, "replicas": context.replicas,
                  "status": "ok", "seconds_per_step": elapsed / args.steps,
                  "bases_per_second": context.replicas * args.seq_len * args.steps / elapsed,
                  "peak_memory_gib": float(peak), "loss": float(loss),
                  "parameters": model.num_parameters()}
        print(MARK + json.dumps(result), flush=True)
    dist.destroy_process_group()
    return 0


# ---------------------------------------------------------------------- the sweep


def _launch(args, size: int, seq_len: int) -> dict:
    """One configuration in its own torchrun on the first ``size`` devices."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={size}", str(Path(__file__).resolve()), "--one",
               "--preset", args.preset, "--seq-len", str(seq_len), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--device", args.device]
    env = dict(os.environ)
    if args.device != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(size)))
    else:
        env["OMP_NUM_THREADS"] = "1"
    row = {"preset": args.preset, "seq_len": seq_len, "context_parallel": size}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": "timeout", "error": f"over {args.timeout} s"}
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    text = done.stdout + done.stderr
    status = "oom" if "out of memory" in text.lower() else "error"
    # the worker's own exception, not the launcher's ChildFailedError after it
    errors = [line for line in text.splitlines() if "Error" in line
              and "ChildFailedError" not in line and "elastic" not in line]
    last = errors[-1:] or text.splitlines()[-1:]
    return {**row, "status": status, "error": (last[0] if last else "")[:300]}


def _efficiency(rows: list[dict]) -> None:
    """Add efficiency against one GPU where one GPU trained the same length."""
    single = {r["seq_len"]: r["bases_per_second"] for r in rows
              if r["context_parallel"] == 1 and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["seq_len"] in single:
            r["efficiency"] = r["bases_per_second"] / (r["context_parallel"]
                                                       * single[r["seq_len"]])


def _environment(args) -> dict:
    info = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": args.device, "host": platform.machine()}
    if args.device != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    return info


def format_table(rows: list[dict], longest: dict[int, int | None]) -> str:
    head = (f"{'cp':>3} {'seq_len':>10} {'status':>7} {'s/step':>8} {'bases/s':>12} "
            f"{'peak GiB':>9} {'efficiency':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        eff = r.get("efficiency")
        lines.append(f"{r['context_parallel']:>3} {r['seq_len']:>10} {r['status']:>7} "
                     f"{r.get('seconds_per_step', float('nan')):>8.3f} "
                     f"{r.get('bases_per_second', float('nan')):>12,.0f} "
                     f"{r.get('peak_memory_gib', float('nan')):>9.2f} "
                     f"{'' if eff is None else f'{eff:.2f}':>10}")
        if r.get("error"):
            lines.append(f"    {r['error']}")
    lines.append("longest trainable context: " + ", ".join(
        f"{size} GPU{'s' if size > 1 else ''}: {length if length else 'none'}"
        for size, length in longest.items()))
    return "\n".join(lines)


def sweep(args) -> int:
    from mambadna._version import __version__

    available = (os.cpu_count() or 1) if args.device == "cpu" else torch.cuda.device_count()
    sizes = [s for s in args.sizes if s <= available]
    if not sizes:
        print(f"no size of {args.sizes} fits the {available} devices here", file=sys.stderr)
        return 1
    rows, longest = [], {}
    for size in sizes:
        longest[size] = None
        length = args.start
        while length <= args.max_len:
            row = _launch(args, size, length)
            print(f"cp {size} seq_len {length}: {row['status']} "
                  f"{row.get('bases_per_second', 0):,.0f} bases/s", file=sys.stderr, flush=True)
            rows.append(row)
            if row["status"] != "ok":
                break
            longest[size] = length
            length *= 2
    _efficiency(rows)
    report = {"benchmark": "benchmarks/context_parallel.py", "mambadna": __version__,
              "environment": _environment(args), "options": vars(args), "results": rows,
              "longest_trainable": {str(k): v for k, v in longest.items()}}
    env = report["environment"]
    print(f"mambadna {__version__} | torch {env['torch']} | {env.get('gpu', env['device'])} "
          f"x {available} | {env['date']} | {args.preset}, batch 1, checkpointing on")
    print(format_table(rows, longest))
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.json}")
    return 0


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python benchmarks/context_parallel.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper-7m", help="Model preset.")
    parser.add_argument("--sizes", default="1,2,4,8",
                        type=lambda s: [int(x) for x in s.split(",")],
                        help="Context-parallel sizes (GPUs per window) to sweep.")
    parser.add_argument("--start", type=int, default=2**20, help="First window length.")
    parser.add_argument("--max-len", type=int, default=2**25, help="Longest window tried.")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first (Triton "
                                                              "compiles and tunes there).")
    parser.add_argument("--timeout", type=int, default=900, help="Seconds per launch.")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda (NCCL) or cpu (gloo, for a smoke test).")
    parser.add_argument("--json", default="context_parallel_bench.json", help="Report file.")
    parser.add_argument("--one", action="store_true", help="One configuration (under "
                                                           "torchrun).")
    parser.add_argument("--seq-len", type=int, default=2**20, help="Window length (--one).")
    parser.add_argument("--context-parallel", type=int, default=0,
                        help="GPUs per window (--one; default: the world).")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    return one(args) if args.one else sweep(args)


if __name__ == "__main__":
    sys.exit(main())
