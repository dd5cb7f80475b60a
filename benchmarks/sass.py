"""What the compiler made of the scan kernels, on any machine (no GPU needed; development tool).

    python benchmarks/sass.py [--kernels forward,forward-summary,backward-summary,backward]
                              [--config stages=3,fwd_warps=1] [--state 16] [--arch 90]
                              [--json sass.json]

Compiles each kernel for the architecture with the ScanConfig's tiling (bf16 u / delta / z,
z gate, D, delta_bias and softplus on, sizes divisible by 16 as at the benchmark's shapes) and
prints registers, spilled bytes, shared memory, the programs one SM holds at once, and the
instruction mix of the longest innermost loop of the SASS (per tile, or per state and tile).
Registers decide the resident programs (docs/kernels.md: 168 -> 12 one-warp programs per SM),
so a variant can be checked here before it costs GPU time. The forward passes and the adjoint
summary compile as the Gluon kernels the launcher runs on aligned rows (``--config gluon=0``:
the Triton ones). The counts depend on the Triton
version: compile with the version the GPU machine runs (Triton 3.6 here reproduced the H200
run's registers to within one; 3.9 made other code).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import tempfile

import scan as bench  # benchmarks/scan.py
import triton
from triton.backends.compiler import GPUTarget

from mambadna.kernels.launch import resident_programs
from mambadna.kernels.selective_scan import kernels as K
from mambadna.kernels.selective_scan import triton as triton_scan
from mambadna.kernels.selective_scan.config import ScanConfig

# Pointer arguments that carry the (batch, dim, L) bf16 tensors; every other pointer is fp32.
_BF16_POINTERS = {"u_ptr", "delta_ptr", "z_ptr", "out_ptr", "dout_ptr", "du_ptr", "ddelta_ptr",
                  "dz_ptr"}
# Integer arguments that are multiples of 16 at the benchmark's shapes (Triton specializes on it).
_DIVISIBLE = {"L", "dim", "dim_per_group", "sB_b", "sB_g", "sBC"}


def _constants(role: str, cfg: ScanConfig, n_state: int) -> tuple[object, dict, int]:
    """(jit function, constexpr values, warps) of a kernel role under ``cfg``."""
    tile = cfg.tile or 8  # the rows compiled here are bf16: 8 positions per 16-byte load
    common = dict(N=n_state, T=tile, CH=cfg.chunk, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True,
                  ALIGNED=True)
    fwd = dict(common, BD=32 * cfg.fwd_warps * cfg.fwd_channels_per_thread, HAS_D=True,
               NS=cfg.stages, BITS=cfg.bit_picks)
    bwd = dict(common, BD=32 * cfg.bwd_warps * cfg.bwd_channels_per_thread)
    fsw = cfg.fwd_summary_warps or cfg.fwd_warps
    bsw = cfg.bwd_summary_warps or cfg.bwd_warps
    table = {
        "forward": (K._scan_fwd_kernel, dict(fwd, SUMMARY=False, WRITE_FINAL=True),
                    cfg.fwd_warps),
        "forward-summary": (K._scan_fwd_kernel,
                            dict(fwd, SUMMARY=True, WRITE_FINAL=False,
                                 BD=32 * fsw * cfg.fwd_channels_per_thread), fsw),
        "backward-summary": (K._scan_bwd_summary_kernel,
                             dict(bwd, NS=cfg.stages, BITS=cfg.bit_picks,
                                  BD=32 * bsw * cfg.bwd_channels_per_thread), bsw),
        "backward": (K._scan_bwd_kernel, dict(bwd, HAS_D=True, BNS=cfg.bwd_stages,
                                              PREFETCH=cfg.bwd_prefetch,
                                              RERUN_BITS=cfg.bit_picks),
                     cfg.bwd_warps),
    }
    if role not in table:
        raise SystemExit(f"unknown kernel {role!r}; choose from {', '.join(table)}")
    G = triton_scan._gluon(_aligned_geometry(n_state), cfg, 1)
    if G is None or role == "backward":
        return table[role]
    # The Gluon kernels the launcher runs for these passes on aligned rows (``cfg.gluon``).
    _triton_fn, constants, warps = table[role]
    constants = {k: v for k, v in constants.items()
                 if k not in ("ALIGNED", "BITS", "WRITE_FINAL", "BNS", "PREFETCH", "RERUN_BITS")}
    gfn = G._scan_bwd_summary_kernel if role == "backward-summary" else G._scan_fwd_kernel
    return gfn, dict(constants, NS=cfg.stages, W=warps), warps


def _aligned_geometry(n_state: int):
    """A geometry with aligned rows (what this tool compiles for), for ``_gluon``'s test."""
    return triton_scan._Geometry(1, 1024, 1 << 20, n_state, 1, 8, 64, 16, 256, 4096, 9, 456,
                                 True)


def _tool(name: str) -> str:
    """Path of a CUDA binary shipped inside Triton's NVIDIA backend (cuobjdump)."""
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def inner_loop(sass: str) -> collections.Counter:
    """Opcode counts of the longest innermost loop of a SASS listing (a loop = the span of a
    backward branch; innermost = containing no other): the forward's tile loop, the
    backward's state loop."""
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)\s*([^;]*);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).split(".")[0], m.group(3)))
    index = {addr: i for i, (addr, _, _) in enumerate(ins)}
    loops = []
    for i, (addr, op, args) in enumerate(ins):
        target = re.search(r"0x([0-9a-f]+)", args) if op == "BRA" else None
        if target and int(target.group(1), 16) < addr and int(target.group(1), 16) in index:
            loops.append((index[int(target.group(1), 16)], i))
    inner = [(lo, hi) for lo, hi in loops
             if not any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in loops)]
    lo, hi = max(inner, key=lambda span: span[1] - span[0], default=(0, len(ins) - 1))
    return collections.Counter(op for _, op, _ in ins[lo:hi + 1])


def report(role: str, cfg: ScanConfig, n_state: int = 16, arch: int = 90) -> dict:
    """Compile one kernel role for sm_``arch``; registers, spills, residency and loop mix."""
    fn, constants, warps = _constants(role, cfg, n_state)
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*bf16" if name in _BF16_POINTERS else "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if name in _DIVISIBLE:
                attrs[(i,)] = [["tt.divisibility", 16]]
    cap = {"forward": cfg.fwd_maxnreg, "forward-summary": cfg.fwd_summary_maxnreg,
           "backward": cfg.bwd_maxnreg}.get(role)
    options = {"num_warps": warps, **({"maxnreg": cap} if cap else {})}
    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource as source
    else:
        source = triton.compiler.ASTSource
    src = source(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", cubin], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", cubin], capture_output=True,
                              text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    regs, stack = int(m.group(1)), int(m.group(2))
    shared = compiled.metadata.shared
    loop = inner_loop(sass)
    return dict(kernel=role, registers=regs, spill_bytes=stack, shared=shared, warps=warps,
                resident_per_sm=resident_programs(regs, warps, shared),
                loop_instructions=sum(loop.values()), loop_mix=dict(loop.most_common(12)))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default="forward,forward-summary,backward-summary,backward")
    parser.add_argument("--config", default="",
                        help="ScanConfig: a TUNED name and/or changes, e.g. stages=3")
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    cfg = bench.parse_config(args.config)
    rows = [report(role, cfg, args.state, args.arch) for role in args.kernels.split(",") if role]
    print(f"Triton {triton.__version__}, sm_{args.arch}, {cfg}")
    print(f"{'kernel':>17} {'regs':>5} {'spill B':>8} {'smem':>6} {'per SM':>6} {'loop':>6}  mix")
    for r in rows:
        mix = ", ".join(f"{op}:{n}" for op, n in r["loop_mix"].items())
        print(f"{r['kernel']:>17} {r['registers']:>5} {r['spill_bytes']:>8} {r['shared']:>6} "
              f"{r['resident_per_sm']:>6} {r['loop_instructions']:>6}  {mix}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(triton=triton.__version__, arch=args.arch, config=repr(cfg),
                           rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main()
