"""One forward+backward of the selective scan between cudaProfilerStart/Stop, for Nsight Compute.

    ncu --clock-control none --profile-from-start off --set full -o scan \\
        python benchmarks/scan_profile.py --shape 1x1024x65536
    ncu -i scan.ncu-rep --page details            # stall reasons, occupancy, cache hit rates
    ncu -i scan.ncu-rep --page source --csv --print-source sass   # per-instruction samples

The kernels are compiled and run once before the profiled region, so only the steady-state
launches (forward summary, chain, forward, and the backward's) are captured. Prints the
profiled call's wall time (under ncu: the profiler's, not the kernels') and, with ``--json``,
writes it with the shape and the configuration.
"""

from __future__ import annotations

import argparse
import json
import time

import scan as bench  # benchmarks/scan.py
import torch

from mambadna.kernels import selective_scan


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=bench._shape, default=(1, 1024, 65536))
    parser.add_argument("--config", default="",
                        help="ScanConfig: a TUNED name and/or changes, e.g. fwd_warps=4")
    parser.add_argument("--json", default=None, help="also write the row here")
    args = parser.parse_args(argv)
    cfg = bench.parse_config(args.config)
    x = bench._leaves(bench.make_inputs(*args.shape))
    dout = torch.randn_like(x["u"])
    selective_scan(**x, config=cfg).backward(dout)  # compile
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    start = time.perf_counter()
    selective_scan(**x, config=cfg).backward(dout)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    torch.cuda.cudart().cudaProfilerStop()
    row = dict(shape=list(args.shape), config=repr(cfg), profiled_fwd_bwd_ms=seconds * 1e3)
    print(f"{'batch,dim,L':>18} {'fwd+bwd ms':>10}  config")
    print(f"{','.join(map(str, args.shape)):>18} {row['profiled_fwd_bwd_ms']:10.3f}  "
          f"{row['config']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
