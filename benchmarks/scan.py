"""GPU benchmark of the selective scan: our Triton kernels vs PyTorch vs the copy roofline.

    python benchmarks/scan.py [--json scan.json] [--shapes 1x1024x4096,8x1024x4096]
                              [--state 16] [--dtype bfloat16] [--reference-max-length N]

For each (batch, dim, L): forward and forward+backward time (median of CUDA-event timings after
warm-up, fresh random inputs, z gate and softplus on, variable B/C of shape (batch, N, L)),
picoseconds per element (one element = one (batch, channel, position)), the fraction of the
copy roofline (the fewest bytes the pass must move, over the device-to-device copy bandwidth
measured in the same run), and the peak extra memory of forward+backward (peak allocated
during the pass minus what was allocated before it: inputs and the output gradient). The
PyTorch reference (the chunked scan that CPU users run) is timed on a prefix of at most
``--reference-max-length`` positions and its time per element reported. Prints a table and
writes JSON. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date

import torch

# Reference CUDA kernel of the Mamba authors (selective_scan_fn), one H200, 2026-11-28,
# bf16, N=16, z and softplus on; (forward ms, forward+backward ms). From kernels/README.md.
REFERENCE_CUDA_MS = {
    (1, 1024, 4096): (0.087, 0.48),
    (8, 1024, 4096): (0.60, 2.94),
    (1, 1024, 65536): (1.47, 7.11),
    (1, 1024, 1 << 20): (23.0, 117.0),
}
DEFAULT_SHAPES = ((1, 1024, 4096), (8, 1024, 4096), (1, 1024, 65536), (1, 1024, 1 << 20),
                  (1, 1024, 1 << 22))


def make_inputs(batch, dim, length, n_state=16, dtype=torch.bfloat16, device="cuda", seed=0):
    """Random selective-scan inputs with Mamba's magnitudes (dt ~ softplus(-4..0))."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dt)

    return dict(
        u=randn(batch, dim, length),
        delta=(randn(batch, dim, length, dt=torch.float32) - 2.0).to(dtype),
        A=-torch.exp(randn(dim, n_state, dt=torch.float32) * 0.5),
        B=randn(batch, n_state, length),
        C=randn(batch, n_state, length),
        D=randn(dim, dt=torch.float32),
        z=randn(batch, dim, length),
        delta_bias=randn(dim, dt=torch.float32) * 0.1,
        delta_softplus=True,
    )


def _bench(fn, grad_to_none=None) -> float:
    """Median milliseconds of fn() by CUDA events (triton.testing.do_bench)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")


def copy_bandwidth(n_bytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = _bench(lambda: dst.copy_(src))
    return 2 * n_bytes / (ms * 1e-3)


def _leaves(x: dict) -> dict:
    return {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v)
            for k, v in x.items()}


def time_forward(scan, x: dict) -> float:
    with torch.no_grad():
        return _bench(lambda: scan(**x))


def time_forward_backward(scan, x: dict) -> float:
    leaves = _leaves(x)
    dout = torch.randn_like(leaves["u"])
    grads = [v for v in leaves.values() if isinstance(v, torch.Tensor)]
    return _bench(lambda: scan(**leaves).backward(dout), grad_to_none=grads)


def peak_extra_memory(scan, x: dict) -> int:
    """Bytes allocated at the peak of one forward+backward beyond what existed before it."""
    leaves = _leaves(x)
    dout = torch.randn_like(leaves["u"])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    scan(**leaves).backward(dout)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def min_bytes(batch, dim, length, n_state, itemsize, backward: bool) -> int:
    """Fewest bytes a pass must move: each (batch, dim, L) tensor and B / C once.

    Forward reads u, delta, z and writes out; backward also reads them again plus dout and
    writes du, ddelta, dz (the forward's out is not needed). B, C: read (and dB, dC written).
    """
    elements = batch * dim * length
    bc = 2 * batch * n_state * length * itemsize
    per_element = (4 + (4 + 3 if backward else 0)) * itemsize
    return elements * per_element + bc * (3 if backward else 1)


def bench_shape(shape, n_state, dtype, bandwidth, reference_max_length) -> dict:
    from mambadna.kernels import selective_scan, selective_scan_chunked

    batch, dim, length = shape
    elements = batch * dim * length
    x = make_inputs(batch, dim, length, n_state, dtype)
    row = dict(batch=batch, dim=dim, L=length, N=n_state, dtype=str(dtype).split(".")[-1])
    row["fwd_ms"] = time_forward(selective_scan, x)
    row["fwd_bwd_ms"] = time_forward_backward(selective_scan, x)
    row["peak_extra_GiB"] = peak_extra_memory(selective_scan, x) / 2**30
    itemsize = x["u"].element_size()
    for key, backward in (("fwd", False), ("fwd_bwd", True)):
        floor_ms = min_bytes(batch, dim, length, n_state, itemsize, backward) / bandwidth * 1e3
        row[f"{key}_ps_per_element"] = row[f"{key}_ms"] * 1e9 / elements
        row[f"{key}_roofline_fraction"] = floor_ms / row[f"{key}_ms"]
    ref_len = min(length, reference_max_length)
    xr = {k: (v[..., :ref_len].contiguous() if isinstance(v, torch.Tensor) and v.dim() == 3
              else v) for k, v in x.items()}
    ref_ms = time_forward(selective_scan_chunked, xr)
    row["torch_reference_fwd_ps_per_element"] = ref_ms * 1e9 / (batch * dim * ref_len)
    row["torch_reference_measured_L"] = ref_len
    cuda = REFERENCE_CUDA_MS.get(tuple(shape))
    row["reference_cuda_fwd_ms"], row["reference_cuda_fwd_bwd_ms"] = cuda or (None, None)
    del x, xr
    torch.cuda.empty_cache()
    return row


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(rows, bandwidth) -> None:
    print(f"copy bandwidth (read+write): {bandwidth / 1e12:.2f} TB/s")
    head = (f"{'batch,dim,L':>18} {'fwd ms':>8} {'ps/el':>6} {'roof':>5} {'ref CUDA':>8} "
            f"{'fwd+bwd ms':>10} {'ps/el':>6} {'roof':>5} {'ref CUDA':>8} {'peak GiB':>8} "
            f"{'torch ps/el':>11}")
    print(head)
    for r in rows:
        print(f"{r['batch']:>4},{r['dim']:>5},{r['L']:>8} {r['fwd_ms']:8.3f} "
              f"{r['fwd_ps_per_element']:6.1f} {r['fwd_roofline_fraction']:5.2f} "
              f"{_fmt(r['reference_cuda_fwd_ms'], '8.3f')} {r['fwd_bwd_ms']:10.3f} "
              f"{r['fwd_bwd_ps_per_element']:6.1f} {r['fwd_bwd_roofline_fraction']:5.2f} "
              f"{_fmt(r['reference_cuda_fwd_bwd_ms'], '8.2f')} {r['peak_extra_GiB']:8.2f} "
              f"{r['torch_reference_fwd_ps_per_element']:11.0f}")


def _shape(text: str) -> tuple[int, int, int]:
    parts = tuple(int(p) for p in text.lower().split("x"))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"shape must be BATCHxDIMxL, got {text!r}")
    return parts


def parse_config(spec: str):
    """A ScanConfig from text: names of the measured-best table (``TUNED``) and ``field=value``
    changes, comma-separated, applied left to right to the defaults (``triton,chunk=128``)."""
    from dataclasses import fields, replace

    from mambadna.kernels.selective_scan.config import TUNED, ScanConfig

    cfg, types = ScanConfig(), {f.name: f.type for f in fields(ScanConfig)}
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if "=" not in item:
            if item not in TUNED:
                raise SystemExit(f"unknown configuration {item!r}; choose from "
                                 f"{', '.join(TUNED)} or give field=value changes")
            cfg = TUNED[item]
            continue
        name, text = (t.strip() for t in item.split("=", 1))
        if name not in types:
            raise SystemExit(f"ScanConfig has no field {name!r}; fields: {', '.join(types)}")
        if text.lower() == "none":
            value = None
        elif "bool" in str(types[name]):
            value = text.lower() in ("1", "true", "yes", "on")
        else:
            value = int(text)
        cfg = replace(cfg, **{name: value})
    return cfg


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=lambda s: [_shape(p) for p in s.split(",")],
                        default=list(DEFAULT_SHAPES))
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--reference-max-length", type=int, default=8192)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/scan.py needs a CUDA GPU")
    import triton

    bandwidth = copy_bandwidth()
    rows = [bench_shape(s, args.state, getattr(torch, args.dtype), bandwidth,
                        args.reference_max_length) for s in args.shapes]
    report = dict(date=date.today().isoformat(), gpu=torch.cuda.get_device_name(),
                  torch=torch.__version__, triton=triton.__version__,
                  python=platform.python_version(), copy_bandwidth_bytes_per_s=bandwidth,
                  rows=rows)
    print_table(rows, bandwidth)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
