"""One forward+backward of the selective scan between cudaProfilerStart/Stop, for Nsight Compute.

    ncu --clock-control none --profile-from-start off --set full -o scan \\
        python -m mambadna.kernels.profile --shape 1x1024x65536
    ncu -i scan.ncu-rep --page details            # stall reasons, occupancy, cache hit rates
    ncu -i scan.ncu-rep --page source --csv --print-source sass   # per-instruction samples

The kernels are compiled and run once before the profiled region, so only the steady-state
launches (forward summary, chain, forward, and the backward's) are captured.
"""

from __future__ import annotations

import argparse

import torch

from mambadna.kernels import bench, selective_scan, triton_scan


def _parse(current, text: str):
    """A ScanConfig field's new value from text, typed like its current value."""
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    return int(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=bench._shape, default=(1, 1024, 65536))
    parser.add_argument("--config", default="", help="ScanConfig changes, e.g. fwd_warps=4")
    args = parser.parse_args(argv)
    changes = dict(kv.split("=") for kv in args.config.split(",") if kv)
    if changes:
        triton_scan.set_config(**{k: _parse(getattr(triton_scan.get_config(), k), v)
                                  for k, v in changes.items()})
    x = bench._leaves(bench.make_inputs(*args.shape))
    dout = torch.randn_like(x["u"])
    selective_scan(**x).backward(dout)  # compile
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    selective_scan(**x).backward(dout)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
