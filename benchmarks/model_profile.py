"""Where the model's time goes on one GPU: each op at the model's shapes against its floor.

    python benchmarks/model_profile.py --json profile.json                 # everything
    python benchmarks/model_profile.py --parts model --presets paper-1.4m  # a subset

Parts (``--parts``, comma-separated):

- ``ceilings``: the card's copy bandwidth (1 GiB device-to-device, read + write) and bf16 GEMM
  rate (8192^3, random data), measured here; the floors below use them.
- ``ops``: one block's ops at (batch, L) = 8 x 2^17 (``--batch``, ``--length``) for each preset,
  forward and forward+backward, each beside its floor: bytes each op must move (inputs read
  once, outputs written once) over the copy bandwidth, GEMM flops over the GEMM rate.
  Where the model has a fused kernel, its PyTorch-ops form (what the model ran before) is
  timed too ("eager").
- ``model``: the whole model: forward (inference, bf16 autocast) bases/s and peak memory at
  8 x 2^17 and 1 x 2^20, a training step (AdamW, bf16) with and without per-block
  checkpointing, and a torch.profiler breakdown of one forward and one forward+backward by
  kernel family (GEMM, scan, conv, norm, other elementwise).
- ``scan``: the selective scan at the issue's shapes, plain and with the forward replayed from
  a CUDA graph (what fixed-shape inference can do: no host launches), and the kernels of one
  forward+backward (their GPU time and launches beside the call's wall time: host or device).

Prints a short table per part; ``--json`` writes every figure. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import triton.testing

import mambadna
from mambadna.model.network import lm_loss

GEMM_FAMILY = ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "matmul")
FAMILIES = (("scan", ("scan", "chain", "_fwd_summary", "_adjoint", "gluon")),
            ("conv", ("conv",)), ("norm", ("rms", "norm")), ("gemm", GEMM_FAMILY))


def _median_ms(fn, reps=20) -> float:
    return float(triton.testing.do_bench(fn, warmup=5, rep=reps, return_mode="median"))


# ---------------------------------------------------------------------------- ceilings


def ceilings() -> dict:
    a = torch.empty(1 << 29, dtype=torch.float16, device="cuda")  # 1 GiB
    b = torch.empty_like(a)
    ms = _median_ms(lambda: b.copy_(a), 100)
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    gemm_ms = _median_ms(lambda: x @ y, 200)
    return dict(copy_TBps=2 * (1 << 30) / ms / 1e9, gemm_TFLOPs=2 * 8192**3 / gemm_ms / 1e9,
                device=torch.cuda.get_device_name())


# ---------------------------------------------------------------------------- ops


def _op_rows(preset: str, batch: int, length: int, ceil: dict) -> list[dict]:
    """One block's ops of ``preset`` at (batch, length), bf16, forward and forward+backward."""
    from mambadna.kernels import causal_conv1d, selective_scan

    cfg = mambadna.ModelConfig.from_preset(preset)
    dm, di, n, r = cfg.d_model, cfg.d_inner, cfg.d_state, int(cfg.dt_rank)
    bw, rate = ceil["copy_TBps"] * 1e12, ceil["gemm_TFLOPs"] * 1e12
    el = batch * length
    bf = torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape, dtype=bf, scale=1.0):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).to(dtype)

    rows = []

    def add(name, fn, bytes_f, bytes_b, flops, make_grad=True, impl="model"):
        """fn() -> outputs (tensor or tuple); time forward, and forward+backward."""
        with torch.no_grad():
            fwd = _median_ms(fn)
        fb = None
        if make_grad:
            outs = fn()
            outs = outs if isinstance(outs, tuple) else (outs,)
            grads = [torch.randn_like(o) for o in outs if o.requires_grad]

            def step():
                o = fn()
                o = o if isinstance(o, tuple) else (o,)
                torch.autograd.backward([t for t in o if t.requires_grad], grads)
            fb = _median_ms(step)
        floor_f = max(bytes_f / bw, flops / rate) * 1e3
        floor_b = max((bytes_f + bytes_b) / bw, 3 * flops / rate) * 1e3
        rows.append(dict(preset=preset, op=name, impl=impl, fwd_ms=fwd, fwd_bwd_ms=fb,
                         floor_fwd_ms=floor_f, floor_fwd_bwd_ms=floor_b,
                         n_layer=cfg.n_layer))

    # residual add + RMSNorm over (batch, L, d_model): x bf16, stream fp32
    hid = rnd(batch, length, dm).requires_grad_()
    res = rnd(batch, length, dm, dtype=torch.float32).requires_grad_()
    w = torch.ones(dm, device="cuda", requires_grad=True)
    norm_bytes = el * dm * (2 + 4 + 2 + 4)
    from mambadna.kernels import rms_norm

    add("add+rmsnorm", lambda: rms_norm(hid, w, res, 1e-5, bf), norm_bytes,
        el * dm * (2 + 4 + 4 + 2 + 4), 0)

    def eager_norm():
        s = res + hid.float()
        return (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-5) * w).to(bf), s
    add("add+rmsnorm", eager_norm, norm_bytes, el * dm * (2 + 4 + 4 + 2 + 4), 0, impl="eager")

    # in_proj (batch, L, dm) -> (batch, 2 di, L)
    w_in = rnd(2 * di, dm, scale=dm**-0.5).requires_grad_()
    hn = rnd(batch, length, dm).requires_grad_()
    in_bytes, in_flops = el * (dm + 2 * di) * 2, 2 * el * dm * 2 * di

    def in_two():  # the model's: x and z as two contiguous products
        w_x, w_z = w_in.split(di, dim=0)
        return torch.matmul(w_x, hn.transpose(1, 2)), torch.matmul(w_z, hn.transpose(1, 2))

    def in_one():  # before: one product, z a slice the scan copies
        x, z = torch.matmul(w_in, hn.transpose(1, 2)).split(di, dim=1)
        return x, z.contiguous()
    add("in_proj", in_two, in_bytes, in_bytes, in_flops)
    add("in_proj", in_one, in_bytes, in_bytes, in_flops, impl="eager")

    # conv + SiLU on a channel slice of xz (as in the mixer)
    xz = rnd(batch, 2 * di, length).requires_grad_()
    cw = rnd(di, cfg.d_conv, dtype=torch.float32, scale=0.5).requires_grad_()
    cb = rnd(di, dtype=torch.float32, scale=0.5).requires_grad_()
    conv_b = el * di * 4
    add("conv+silu", lambda: causal_conv1d(xz[:, :di], cw, cb, activation="silu"), conv_b,
        el * di * 6, 0)
    add("conv+silu", lambda: causal_conv1d(xz[:, :di], cw, cb, activation="silu",
                                           backend="reference"), conv_b, el * di * 6, 0,
        impl="eager")

    # x_proj and dt_proj
    x = rnd(batch, di, length).requires_grad_()
    w_x = rnd(r + 2 * n, di, scale=di**-0.5).requires_grad_()
    add("x_proj", lambda: torch.matmul(w_x, x), el * (di + r + 2 * n) * 2,
        el * (di + r + 2 * n) * 2, 2 * el * di * (r + 2 * n))
    dtl = rnd(batch, r, length).requires_grad_()
    w_dt = rnd(di, r, scale=r**-0.5).requires_grad_()
    add("dt_proj", lambda: torch.matmul(w_dt, dtl), el * (di + r) * 2, el * (di + r) * 2,
        2 * el * di * r)

    # the scan (u, delta, z in, out; B, C)
    u, z = rnd(batch, di, length).requires_grad_(), rnd(batch, di, length).requires_grad_()
    delta = (rnd(batch, di, length, dtype=torch.float32) - 2).to(bf).requires_grad_()
    A = (-torch.exp(rnd(di, n, dtype=torch.float32) * 0.5)).requires_grad_()
    B, C = rnd(batch, n, length).requires_grad_(), rnd(batch, n, length).requires_grad_()
    D = rnd(di, dtype=torch.float32).requires_grad_()
    bias = (rnd(di, dtype=torch.float32) * 0.1).requires_grad_()
    add("scan", lambda: selective_scan(u, delta, A, B, C, D, z, bias, True),
        el * (di * 8 + 2 * n * 2), el * (di * 14 + 2 * n * 4), 0)

    # out_proj (batch, di, L) -> (batch, L, dm)
    w_out = rnd(dm, di, scale=di**-0.5).requires_grad_()
    add("out_proj", lambda: torch.matmul(u.transpose(1, 2), w_out.t()),
        el * (di + dm) * 2, el * (di + dm) * 2, 2 * el * di * dm)
    return rows


# ---------------------------------------------------------------------------- model


def _family(name: str) -> str:
    low = name.lower()
    for family, keys in FAMILIES:
        if any(k in low for k in keys):
            return family
    return "other"


def _kernel_times(fn) -> list[tuple[float, int, str]]:
    """(GPU ms, launches, name) of every kernel of one call of fn (after a warm-up call), the
    longest first."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = getattr(e, "cuda_time_total", 0)
        if t and e.key and not e.key.startswith(("cudaLaunch", "cuLaunch", "ProfilerStep")):
            rows.append((t / 1e3, e.count, e.key))
    return sorted(rows, reverse=True)


def _profile(fn) -> dict:
    """GPU time (ms) by kernel family of one call of fn (after a warm-up call)."""
    out: dict = {}
    other = []
    for ms, count, name in _kernel_times(fn):
        fam = _family(name)
        out[fam] = out.get(fam, 0.0) + ms
        if fam == "other":
            other.append((round(ms, 3), count, name[:90]))
    out["kernels"] = sum(out.values())
    out["top_other"] = sorted(other, reverse=True)[:8]
    return out


def _graphed_row(model, preset, batch, length, tokens) -> dict:
    """The same forward replayed from a CUDA graph (where the tree has it)."""
    row = dict(preset=preset, work="fwd-graph", batch=batch, length=length, ms=math.nan,
               Mbases_s=math.nan, peak_GiB=math.nan, profile=None)
    try:
        from mambadna.model.graphs import GraphedHiddenStates
    except ImportError:
        row["note"] = "no graphs module"
        return row
    try:
        graphed = GraphedHiddenStates(model, batch, length)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            eager = model.hidden_states(tokens)
        err = float((graphed(tokens).float() - eager.float()).norm() / eager.float().norm())
        ms = _median_ms(lambda: graphed(tokens), 200)
        row.update(ms=ms, Mbases_s=batch * length / ms / 1e3, note=f"rel. diff {err:.1e}")
    except Exception as err:  # report it, do not stop the benchmark
        row["note"] = f"failed: {type(err).__name__}: {err}"[:300]
    torch.cuda.empty_cache()
    return row


def save_hidden(path: str) -> None:
    """Hidden states of paper-1.4m (seed 0) on fixed tokens, to compare two trees' models."""
    torch.manual_seed(0)
    model = mambadna.MambaDNA(mambadna.ModelConfig.from_preset("paper-1.4m")).cuda().eval()
    tokens = torch.randint(0, 4, (2, 1 << 14), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        bf = model.hidden_states(tokens.cuda()).float().cpu()
    with torch.inference_mode():
        fp = model.hidden_states(tokens.cuda()).float().cpu()
    torch.save(dict(bf16=bf, fp32=fp), path)


def model_rows(presets, shapes, train_shapes) -> list[dict]:
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        cfg = mambadna.ModelConfig.from_preset(preset)
        model = mambadna.MambaDNA(cfg).cuda()
        for batch, length in shapes:
            tokens = torch.randint(0, 4, (batch, length), device="cuda")
            model.eval()

            def forward(model=model, tokens=tokens):
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return model.hidden_states(tokens)
            forward()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ms = _median_ms(forward, 200)
            peak = torch.cuda.max_memory_allocated() / 2**30
            prof = _profile(forward)
            rows.append(dict(preset=preset, work="forward", batch=batch, length=length, ms=ms,
                             Mbases_s=batch * length / ms / 1e3, peak_GiB=peak, profile=prof))
            rows.append(_graphed_row(model, preset, batch, length, tokens))
        for batch, length, ckpt in train_shapes:
            model.config.gradient_checkpointing = ckpt
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            tokens = torch.randint(0, 4, (batch, length), device="cuda")

            def step(model=model, tokens=tokens, opt=opt):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = lm_loss(model(tokens), tokens)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            try:
                step()
                step()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    step()
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                ms = sorted(times)[1] * 1e3
                peak = torch.cuda.max_memory_allocated() / 2**30
                prof = _profile(step) if not ckpt else None
                rows.append(dict(preset=preset, work="train" + ("-ckpt" if ckpt else ""),
                                 batch=batch, length=length, ms=ms,
                                 Mbases_s=batch * length / ms / 1e3, peak_GiB=peak,
                                 profile=prof))
            except torch.OutOfMemoryError:
                rows.append(dict(preset=preset, work="train" + ("-ckpt" if ckpt else ""),
                                 batch=batch, length=length, ms=math.nan, Mbases_s=math.nan,
                                 peak_GiB=math.nan, profile=None, note="out of memory"))
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        model.config.gradient_checkpointing = False
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------- scan


def scan_rows(shapes) -> list[dict]:
    from mambadna.bench import graph_forward_seconds, scan_inputs
    from mambadna.kernels import selective_scan

    rows = []
    for batch, dim, length in shapes:
        x = scan_inputs(batch, dim, length, "cuda", torch.bfloat16)
        with torch.no_grad():
            fwd = _median_ms(lambda x=x: selective_scan(**x), 200)
        leaves = {k: (v.requires_grad_() if isinstance(v, torch.Tensor) else v)
                  for k, v in x.items()}
        dout = torch.randn_like(x["u"])
        inputs = [v for v in leaves.values() if isinstance(v, torch.Tensor)]

        def fwd_bwd(x=leaves, d=dout, inputs=inputs):
            # autograd.grad, not backward(): repeated backward() calls add every gradient into
            # .grad, five more bf16 kernels a call (0.2 ms at 8 x 1024 x 4096) that are not
            # the scan's.
            return torch.autograd.grad(selective_scan(**x), inputs, d)
        fb = _median_ms(fwd_bwd, 200)
        # Kernel time of one forward+backward against its wall time: where the kernels take far
        # less than the call, the host (launches, torch ops, autograd) sets the time.
        kernels = _kernel_times(fwd_bwd)
        try:  # the forward captured once, replayed: no host work per call
            graph_fwd = graph_forward_seconds(x, torch.device("cuda")) * 1e3
        except Exception as err:  # report it, do not stop the benchmark
            graph_fwd = f"failed: {type(err).__name__}: {err}"[:200]
        rows.append(dict(shape=[batch, dim, length], fwd_ms=fwd, fwd_bwd_ms=fb,
                         graph_fwd_ms=graph_fwd,
                         fwd_bwd_kernel_ms=sum(ms for ms, _, _ in kernels),
                         fwd_bwd_launches=sum(n for _, n, _ in kernels),
                         fwd_bwd_top=[(round(ms, 4), n, name[:90]) for ms, n, name in kernels[:8]]))
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------- main


def _guard(fn, *args):
    """fn(*args), or None after printing what failed (one part must not stop the others)."""
    try:
        return fn(*args)
    except Exception:  # report it, do not stop the benchmark
        import traceback

        traceback.print_exc()
        torch.cuda.empty_cache()
        return None


def _f(v, spec=".3f"):
    return format(v, spec) if isinstance(v, (int, float)) and v == v else str(v)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="ceilings,ops,model,scan")
    parser.add_argument("--presets", default="paper-1.4m,paper-7m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=1 << 17)
    parser.add_argument("--no-train", action="store_true", help="model part: forward only")
    parser.add_argument("--train-long", action="store_true",
                        help="model part: also train at 1 x 2^20 (with and without "
                             "checkpointing)")
    parser.add_argument("--forward-shapes", default="8x131072,1x1048576,8x4096,1x4096",
                        help="model part: batch x length of the forward rows")
    parser.add_argument("--scan-shapes", default="1x1024x4096,8x1024x4096,1x1024x1048576",
                        help="scan part: batch x dim x L, comma-separated")
    parser.add_argument("--label", default="", help="a name for this tree, printed and saved")
    parser.add_argument("--save-hidden", default=None,
                        help="write paper-1.4m's hidden states on fixed tokens here")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    presets = args.presets.split(",")
    result: dict = dict(label=args.label, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        torch=torch.__version__, device=torch.cuda.get_device_name())
    ceil = ceilings()
    result["ceilings"] = ceil
    print(f"[{args.label}] {ceil['device']}: copy {ceil['copy_TBps']:.2f} TB/s, "
          f"bf16 GEMM {ceil['gemm_TFLOPs']:.0f} TFLOP/s")
    if args.save_hidden:
        _guard(save_hidden, args.save_hidden)
    if "ops" in parts:
        rows = []
        for preset in presets:
            rows += _guard(_op_rows, preset, args.batch, args.length, ceil) or []
        result["ops"] = rows
        print(f"\nops of one block at {args.batch} x {args.length} (ms; floor = bytes / copy "
              "rate or flops / GEMM rate)")
        print(f"{'preset':>10} {'op':>12} {'impl':>6} {'fwd':>8} {'floor':>7} {'fwd+bwd':>8} "
              f"{'floor':>7}")
        for r in rows:
            print(f"{r['preset']:>10} {r['op']:>12} {r['impl']:>6} {_f(r['fwd_ms']):>8} "
                  f"{_f(r['floor_fwd_ms']):>7} {_f(r['fwd_bwd_ms']):>8} "
                  f"{_f(r['floor_fwd_bwd_ms']):>7}")
    if "model" in parts:
        shapes = [tuple(int(v) for v in shape.split("x"))
                  for shape in args.forward_shapes.split(",") if shape]
        train = [] if args.no_train else [(args.batch, args.length, False),
                                          (args.batch, args.length, True)]
        if args.train_long and not args.no_train:
            train += [(1, 1 << 20, False), (1, 1 << 20, True)]
        rows = _guard(model_rows, presets, shapes, train) or []
        result["model"] = rows
        print(f"\n[{args.label}] model (bf16 autocast)")
        print(f"{'preset':>10} {'work':>10} {'shape':>12} {'ms':>9} {'M bases/s':>9} "
              f"{'GiB':>6}  kernel ms by family")
        for r in rows:
            prof = dict(r.get("profile") or {})
            top = prof.pop("top_other", [])
            fams = " ".join(f"{k} {v:.1f}" for k, v in sorted(prof.items()))
            print(f"{r['preset']:>10} {r['work']:>10} {r['batch']}x{r['length']:>9} "
                  f"{_f(r['ms'], '.1f'):>9} {_f(r['Mbases_s'], '.2f'):>9} "
                  f"{_f(r['peak_GiB'], '.1f'):>6}  {fams} {r.get('note', '')}")
            if r["work"] == "train":
                for ms, count, name in top[:5]:
                    print(f"{'':>12} other: {ms:8.2f} ms {count:5d}x {name}")
    if "scan" in parts:
        shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.scan_shapes.split(",")]
        rows = _guard(scan_rows, shapes) or []
        result["scan"] = rows
        print(f"\n[{args.label}] scan (bf16, N 16)")
        print(f"{'shape':>16} {'fwd ms':>8} {'f+b ms':>8} {'graph fwd':>10} "
              f"{'f+b kernels ms':>14} {'launches':>8}")
        for r in rows:
            print(f"{','.join(map(str, r['shape'])):>16} {_f(r['fwd_ms']):>8} "
                  f"{_f(r['fwd_bwd_ms']):>8} {_f(r['graph_fwd_ms']):>10} "
                  f"{_f(r['fwd_bwd_kernel_ms']):>14} {r['fwd_bwd_launches']:>8}")
            for ms, count, name in r["fwd_bwd_top"][:6]:
                print(f"{'':>16} {ms:8.3f} ms {count:3d}x {name}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
