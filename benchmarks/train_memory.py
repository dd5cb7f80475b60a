"""Where a training step's GPU memory goes: activations kept by the forward, the backward's
peak on top of them, block by block, and the largest saved tensors.

    python benchmarks/train_memory.py                       # paper-1.4m, 1 x 2^17
    python benchmarks/train_memory.py --preset paper-7m --batch 1 --length 1048576
    python benchmarks/train_memory.py --parts configs --scan low-memory   # rows of both scans

Three parts, each in this process on a fresh model (bf16 autocast, AdamW):

- ``configs``: for checkpointing off/on and ``Recompute`` (x, z, conv output and delta rebuilt in
  the backward) on/off: memory allocated after the forward (what the backward will read),
  per position and block; the step's time and its peak. peak - after-forward is the
  backward's own memory: a backward that frees each block's saved tensors once it is done
  keeps it near one block's gradients, not a multiple of the activations.
- ``trace``: memory allocated and peak at the start and end of the backward of a few blocks
  (module backward hooks): whether the backward's memory grows from block to block.
- ``saved``: the largest tensors the forward saves for the backward (with ``Recompute`` off, so
  that every save passes through the census hook), by shape and dtype.

Needs CUDA. Prints the figures and writes them with ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections import Counter

import torch

import mambadna
import mambadna.model.mixer as mixer_module
from mambadna.kernels import scan_config
from mambadna.model.network import lm_loss

GiB = 2**30
_forward = mixer_module.Mixer.forward


def _recompute(on: bool) -> None:
    """Mixer.forward with its ``recompute`` argument forced to ``on`` (or left as it is)."""
    def without(self, hidden, conv_state=None, ssm_state=None, lengths=None, context=None,
                recompute=True):
        return _forward(self, hidden, conv_state, ssm_state, lengths, context, False)
    mixer_module.Mixer.forward = _forward if on else without


def _model(preset: str, checkpointing: bool):
    torch.manual_seed(0)
    model = mambadna.MambaDNA(mambadna.ModelConfig.from_preset(preset)).cuda().train()
    model.config.gradient_checkpointing = checkpointing
    return model


def _step(model, opt, tokens, scan=None):
    with torch.autocast("cuda", dtype=torch.bfloat16), scan_config(scan):
        loss = lm_loss(model(tokens), tokens)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def config_row(preset, batch, length, checkpointing, recompute, scan=None) -> dict:
    _recompute(recompute)
    row = dict(preset=preset, batch=batch, length=length, checkpointing=checkpointing,
               recompute=recompute, scan=scan or "default")
    model = _model(preset, checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, 4, (batch, length), device="cuda")
    try:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16), scan_config(scan):
            loss = lm_loss(model(tokens), tokens)
        torch.cuda.synchronize()
        kept = torch.cuda.memory_allocated() - base
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(2):
            _step(model, opt, tokens, scan)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / 2
        row.update(after_forward_GiB=kept / GiB,
                   bytes_per_position_block=kept / (batch * length * len(model.layers)),
                   step_ms=seconds * 1e3, Mbases_s=batch * length / seconds / 1e6,
                   peak_GiB=torch.cuda.max_memory_allocated() / GiB)
    except torch.OutOfMemoryError:
        row["note"] = f"out of memory (peak {torch.cuda.max_memory_allocated() / GiB:.1f} GiB)"
    finally:
        _recompute(True)
        del model, opt, tokens
        gc.collect()  # nothing of this row may stay for the next one's peak
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row


def trace(preset, batch, length) -> list[str]:
    model = _model(preset, False)
    tokens = torch.randint(0, 4, (batch, length), device="cuda")
    lines: list[str] = []

    def mark(name):
        def hook(*_):
            torch.cuda.synchronize()
            lines.append(f"{name}: allocated {torch.cuda.memory_allocated() / GiB:.2f} GiB, "
                         f"peak {torch.cuda.max_memory_allocated() / GiB:.2f}")
        return hook
    last = len(model.layers) - 1
    for i in sorted({0, 1, last - 1, last}):
        layer = model.layers[i]
        layer.register_full_backward_pre_hook(mark(f"block {i} backward start"))
        layer.register_full_backward_hook(mark(f"block {i} backward end"))
    for _ in range(2):  # the second step is reported (kernels compiled, caches warm)
        lines.clear()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm_loss(model(tokens), tokens)
        mark("after forward")()
        loss.backward()
        mark("after backward")()
        del loss
        model.zero_grad(set_to_none=True)
    del model
    torch.cuda.empty_cache()
    return lines


def saved(preset, batch, length, top: int = 12) -> list[dict]:
    _recompute(False)
    model = _model(preset, False)
    tokens = torch.randint(0, 4, (batch, length), device="cuda")
    sizes: Counter = Counter()

    def pack(t):
        sizes[(tuple(t.shape), str(t.dtype), t.numel() * t.element_size())] += 1
        return t
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm_loss(model(tokens), tokens)
        del loss
    finally:
        _recompute(True)
    del model
    torch.cuda.empty_cache()
    rows = [dict(shape=shape, dtype=dtype, MiB=size / 2**20, count=n)
            for (shape, dtype, size), n in sizes.items()]
    return sorted(rows, key=lambda r: -r["MiB"] * r["count"])[:top]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper-1.4m")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--length", type=int, default=1 << 17)
    parser.add_argument("--parts", default="configs,trace,saved")
    parser.add_argument("--scan", default=None,
                        help="configs: also each row under this scan configuration (a TUNED "
                             "name, e.g. low-memory: a saved state every 256 positions)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    shape = (args.preset, args.batch, args.length)
    result: dict = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        device=torch.cuda.get_device_name(), torch=torch.__version__,
                        preset=args.preset, batch=args.batch, length=args.length)
    print(f"{result['device']}, {args.preset}, {args.batch} x {args.length}, bf16")
    if "configs" in parts:
        rows = [config_row(*shape, ckpt, rec, scan) for ckpt, rec in
                ((False, True), (False, False), (True, True))
                for scan in (None, args.scan)[:1 + bool(args.scan)]]
        result["configs"] = rows
        print(f"{'ckpt':>5} {'recompute':>9} {'scan':>10} {'kept GiB':>9} {'B/pos/block':>11} "
              f"{'step ms':>8} {'M b/s':>6} {'peak GiB':>8}")
        for r in rows:
            head = f"{r['checkpointing']!s:>5} {r['recompute']!s:>9} {r['scan']:>10}"
            if "note" in r:
                print(f"{head} {r['note']}")
                continue
            print(f"{head} {r['after_forward_GiB']:>9.2f} "
                  f"{r['bytes_per_position_block']:>11.0f} {r['step_ms']:>8.0f} "
                  f"{r['Mbases_s']:>6.2f} {r['peak_GiB']:>8.1f}")
    if "trace" in parts:
        result["trace"] = trace(*shape)
        print("\n".join(result["trace"]))
    if "saved" in parts:
        result["saved"] = saved(*shape)
        for r in result["saved"]:
            print(f"saved {r['count']:3d} x {r['MiB']:8.1f} MiB {r['shape']} {r['dtype']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
