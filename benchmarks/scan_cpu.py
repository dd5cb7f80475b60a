"""CPU benchmark of the PyTorch selective scans: per-position loop vs chunked closed form.

    python benchmarks/scan_cpu.py [--batch 2 --dim 256 --state 16 --length 4096]
                                  [--threads 2] [--json out.json]

Prints one row per (implementation, pass) with milliseconds, ns per element and the speed-up of
the chunked scan over the loop; "element" is one (batch, channel, position). The floor printed
next to it counts the fp32 elementwise passes over (batch, dim, L, N) that the chunked form makes
(about a dozen: decay, exp, inputs, divide, cumsum, carry, multiply, C-product, sum), at the
elementwise rate measured in the same run on an in-cache tensor.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import torch

from mambadna.kernels.selective_scan.naive import selective_scan_chunked, selective_scan_reference

PASSES_PER_ELEMENT_STATE = 12


def _inputs(batch, dim, n_state, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=torch.randn(batch, dim, length, generator=g) - 2.0,
        A=-torch.arange(1, n_state + 1, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(batch, n_state, length, generator=g),
        C=torch.randn(batch, n_state, length, generator=g),
        D=torch.ones(dim),
        z=torch.randn(batch, dim, length, generator=g),
        delta_bias=torch.zeros(dim),
        delta_softplus=True,
    )


def _time(fn, repeats: int) -> float:
    """Median wall time in seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _forward_backward(scan, x):
    leaves = {k: (v.clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v)
              for k, v in x.items()}
    scan(**leaves).sum().backward()


def _elementwise_rate(n_elements: int = 1 << 17) -> float:
    """Seconds per element of one in-cache fp32 multiply, measured now (the machine's rate)."""
    a, b = torch.rand(n_elements), torch.rand(n_elements)
    return _time(lambda: torch.mul(a, b), 50) / n_elements


def run(batch=2, dim=256, n_state=16, length=4096, repeats=3):
    x = _inputs(batch, dim, n_state, length)
    elements = batch * dim * length
    rows = []
    for pass_name, wrap in (("forward", lambda f: (lambda: f(**x))),
                            ("forward+backward", lambda f: (lambda: _forward_backward(f, x)))):
        with torch.inference_mode(pass_name == "forward"):
            loop = _time(wrap(selective_scan_reference), 1 if pass_name != "forward" else repeats)
            chunked = _time(wrap(selective_scan_chunked), repeats)
        rows.append(dict(pass_=pass_name, loop_ms=loop * 1e3, chunked_ms=chunked * 1e3,
                         loop_ns_per_element=loop / elements * 1e9,
                         chunked_ns_per_element=chunked / elements * 1e9,
                         speedup=loop / chunked))
    floor = _elementwise_rate() * PASSES_PER_ELEMENT_STATE * elements * n_state
    return dict(shape=dict(batch=batch, dim=dim, N=n_state, L=length),
                threads=torch.get_num_threads(), torch=torch.__version__,
                machine=platform.processor() or platform.machine(), date=date.today().isoformat(),
                chunked_forward_floor_ms=floor * 1e3, rows=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.batch, args.dim, args.state, args.length, args.repeats)
    print(f"selective scan on CPU, {result['shape']}, {result['threads']} threads, "
          f"torch {result['torch']}, {result['date']}")
    print(f"{'pass':<18}{'loop ms':>10}{'chunked ms':>12}{'loop ns/el':>12}"
          f"{'chunked ns/el':>15}{'speed-up':>10}")
    for r in result["rows"]:
        print(f"{r['pass_']:<18}{r['loop_ms']:>10.1f}{r['chunked_ms']:>12.1f}"
              f"{r['loop_ns_per_element']:>12.1f}{r['chunked_ns_per_element']:>15.1f}"
              f"{r['speedup']:>9.1f}x")
    print(f"elementwise floor of the chunked forward ({PASSES_PER_ELEMENT_STATE} passes over "
          f"batch*dim*L*N at the measured in-cache rate): "
          f"{result['chunked_forward_floor_ms']:.1f} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
