"""End-to-end throughput: tokenize MB/s, embed bases/s, train tokens/s, the scan's ms, and
peak memory.

Each stage calls the library function a user would, on generated data (random bases, so the
numbers do not depend on a download), after a warm-up that compiles the GPU kernels::

    mambadna bench                                            # CPU, paper-1.4m, window 16,384
    mambadna bench --device cuda --preset paper-7m --window 131072 --stream   # one GPU, bf16

- tokenize: ``mambadna.data.store.write_token_store`` on a FASTA of ``tokenize_mb`` MB.
- embed: ``mambadna.pipelines.embed`` (to Parquet) of ``embed_bases`` bases in ``batch_size``
  records; bases/s counts the bases of all windows over the whole call (reading, inference,
  pooling, writing).
- forward: the model's forward (``hidden_states``, inference) over ``batch_size`` random
  windows of ``window`` bases; bases/s of the median of 5 passes, and on CUDA also replayed from
  a CUDA graph (``mambadna.model.graphs``: no host work per call).
- train: AdamW steps of next-base prediction (``lm_loss``) on random windows of
  ``train_seq_len``; tokens/s over ``train_steps`` steps after ``warmup_steps``.
- scan: the selective scan alone (``mambadna.kernels.selective_scan``, with the model's
  softplus, D skip and gate, N 16) at each of ``scan_shapes`` (batch, channels, length):
  forward and forward+backward ms (medians), on CUDA also the forward replayed from a CUDA
  graph. Not run by default.

Peak memory: on CUDA the peak allocated by torch during each stage; on CPU the process's peak
resident set size so far (it only grows, so it bounds every stage measured before it).
Weights are random: throughput does not depend on them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mambadna._version import __version__
from mambadna.atomic import atomic_file
from mambadna.errors import ConfigError

STAGES = ("tokenize", "embed", "forward", "train", "scan")
DEFAULT_STAGES = ("tokenize", "embed", "forward", "train")  # the scan alone only when asked
# The speed issue's shapes on a GPU; on a CPU one model-sized scan (paper-1.4m's 256 channels).
CUDA_SCAN_SHAPES = ((1, 1024, 4096), (8, 1024, 4096), (1, 1024, 1 << 20))
CPU_SCAN_SHAPES = ((1, 256, 16_384),)


@dataclass
class BenchConfig:
    """What ``mambadna bench`` measures (CLI options of the same names)."""

    device: str = "auto"
    """"auto" (CUDA if available), "cpu", "cuda", "cuda:1"..."""
    preset: str = "paper-1.4m"
    """Model preset: tiny, paper-1.4m, paper-7m."""
    window: int = 16_384
    """Embedding window (bases)."""
    stream: bool = False
    """Embed with the state carried along each record."""
    batch_size: int = 8
    """Embedding windows per forward pass (and records of the embedding input)."""
    embed_bases: int | None = None
    """Bases to embed; default 2 windows per record on CPU, 64 on CUDA."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32"."""
    tokenize_mb: float = 32.0
    """Size of the FASTA to tokenize (MB)."""
    train_seq_len: int = 4096
    """Tokens per training sequence."""
    train_batch_size: int = 8
    """Sequences per training step."""
    train_steps: int = 5
    """Timed training steps."""
    warmup_steps: int = 2
    """Untimed training steps first (kernel compilation, allocator warm-up)."""
    gradient_checkpointing: bool = False
    """Recompute blocks in the backward pass (less memory, ~30% more time)."""
    stages: tuple[str, ...] = DEFAULT_STAGES
    """Which stages to run (any of STAGES)."""
    scan_shapes: tuple[tuple[int, int, int], ...] | None = None
    """(batch, channels, length) of each scan timing; default CUDA_SCAN_SHAPES on CUDA,
    CPU_SCAN_SHAPES on CPU."""
    seed: int = 0
    """Seed of the generated sequences and the model weights."""
    work_dir: str | None = None
    """Folder for the generated files (default: a temporary folder, removed after)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown or not self.stages:
            raise ConfigError(f"unknown or no bench stage(s) {unknown}; choose from "
                              f"{', '.join(STAGES)}")
        for name in ("window", "batch_size", "train_seq_len", "train_batch_size",
                     "train_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bench {name} must be >= 1, got {getattr(self, name)}")
        if self.scan_shapes is not None and (
                not self.scan_shapes
                or any(len(shape) != 3 or min(shape) < 1 for shape in self.scan_shapes)):
            raise ConfigError(f"bench scan_shapes must be (batch, channels, length) triples of "
                              f"positive sizes, got {self.scan_shapes}")
        if self.tokenize_mb <= 0 or (self.embed_bases is not None and self.embed_bases < 1):
            raise ConfigError("bench tokenize_mb and embed_bases must be positive")


# ---------------------------------------------------------------------------- helpers


def parse_shapes(text: str) -> tuple[tuple[int, int, int], ...]:
    """"1x1024x4096,8x1024x4096" -> ((1, 1024, 4096), (8, 1024, 4096))."""
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ConfigError(f"bench scan shape {item.strip()!r} is not BATCHxCHANNELSxLENGTH "
                              "of positive whole numbers, e.g. 1x1024x4096")
        shapes.append(tuple(int(p) for p in parts))
    return tuple(shapes)


def write_random_fasta(path: Path, lengths: list[int], seed: int, width: int = 80) -> int:
    """A FASTA of random ACGT records ``chr1..`` with the given lengths; returns its bytes."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    chunk = width * 50_000  # whole lines at a time: bounded memory for any length
    with open(path, "wb") as fh:
        for i, length in enumerate(lengths):
            fh.write(f">chr{i + 1}\n".encode())
            for start in range(0, length, chunk):
                seq = letters[rng.integers(0, 4, min(chunk, length - start))]
                full = len(seq) // width * width
                lines = np.concatenate([seq[:full].reshape(-1, width),
                                        np.full((full // width, 1), ord("\n"), np.uint8)], 1)
                fh.write(lines.tobytes())
                if full < len(seq):
                    fh.write(seq[full:].tobytes() + b"\n")
    return path.stat().st_size


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, device, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of fn, after two untimed ones."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


# ---------------------------------------------------------------------------- stages


def bench_tokenize(cfg: BenchConfig, work: Path) -> dict:
    """Write a token store of a generated FASTA; MB/s of FASTA bytes."""
    from mambadna.data.store import write_token_store

    n_bases = int(cfg.tokenize_mb * 1e6 * 80 / 81)  # 80 bases + newline per line
    lengths = [n_bases // 4] * 3 + [n_bases - 3 * (n_bases // 4)]
    fasta = work / "tokenize.fa"
    size = write_random_fasta(fasta, lengths, cfg.seed)
    started = time.perf_counter()
    write_token_store([fasta], work / "store", force=True)
    seconds = time.perf_counter() - started
    return {"megabytes": size / 1e6, "bases": n_bases, "seconds": seconds,
            "mb_per_s": size / 1e6 / seconds}


def bench_embed(cfg: BenchConfig, work: Path, model, device) -> dict:
    """Embed generated records to Parquet with the pipeline; bases/s over the whole call."""
    from mambadna.pipelines.embed import embed_run
    from mambadna.pipelines.run import RunOptions

    per_lane = 2 if device.type == "cpu" else 64
    total = cfg.embed_bases or cfg.window * cfg.batch_size * per_lane
    windows_per_record = max(1, -(-total // (cfg.window * cfg.batch_size)))
    lengths = [windows_per_record * cfg.window] * cfg.batch_size
    opts = RunOptions(window=cfg.window, batch_size=cfg.batch_size, stream=cfg.stream,
                      device=str(device), precision=cfg.precision, progress=False)
    # Warm-up: on CUDA at full size (kernels are compiled and tuned per shape); on the CPU one
    # short window is enough for the lazy imports.
    warm = work / "warmup.fa"
    warm_lengths = ([cfg.window] * cfg.batch_size if device.type == "cuda"
                    else [min(cfg.window, 1024)])
    write_random_fasta(warm, warm_lengths, cfg.seed + 1)
    embed_run(model, warm, work / "warmup.parquet", force=True,
              options=dataclasses.replace(opts, window=warm_lengths[0]))
    fasta = work / "embed.fa"
    write_random_fasta(fasta, lengths, cfg.seed + 2)
    _reset_peak(device)
    result = embed_run(model, fasta, work / "embed.parquet", force=True, options=opts)
    return {"bases": result.bases, "windows": result.n_windows, "window": cfg.window,
            "batch_size": cfg.batch_size, "stream": cfg.stream, "seconds": result.seconds,
            "bases_per_s": result.bases_per_second, "peak_memory_mb": _peak_mb(device)}


def bench_forward(cfg: BenchConfig, model, device, precision: str) -> dict:
    """Inference forward over (batch_size, window) random bases: bases/s, eager and graphed."""
    import torch

    from mambadna.model.graphs import GraphedHiddenStates

    generator = torch.Generator().manual_seed(cfg.seed)
    tokens = torch.randint(5, 9, (cfg.batch_size, cfg.window), generator=generator).to(device)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def timed(fn) -> float:
        return _median_seconds(fn, device, 5)

    def eager():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=dtype is not None):
            return model.hidden_states(tokens)

    _reset_peak(device)
    seconds = timed(eager)
    n_bases = cfg.batch_size * cfg.window
    result = {"window": cfg.window, "batch_size": cfg.batch_size, "seconds": seconds,
              "bases_per_s": n_bases / seconds, "peak_memory_mb": _peak_mb(device)}
    if device.type == "cuda":
        graphed = GraphedHiddenStates(model, cfg.batch_size, cfg.window, dtype=dtype)
        graph_seconds = timed(lambda: graphed(tokens))
        result.update(graph_seconds=graph_seconds, graph_bases_per_s=n_bases / graph_seconds)
    return result


def bench_train(cfg: BenchConfig, model, device, precision: str) -> dict:
    """AdamW steps of next-base prediction on random windows; tokens/s and peak memory."""
    import torch

    from mambadna.model import lm_loss

    model.config.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.train_batch_size, cfg.train_seq_len)
    tokens = torch.randint(5, 9, shape, generator=generator).to(device)  # A C G T
    bf16 = precision == "bf16"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = lm_loss(model(tokens), tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(cfg.warmup_steps):
        step()
    _reset_peak(device)
    started = time.perf_counter()
    for _ in range(cfg.train_steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    model.eval()
    n_tokens = cfg.train_steps * cfg.train_batch_size * cfg.train_seq_len
    return {"seq_len": cfg.train_seq_len, "batch_size": cfg.train_batch_size,
            "steps": cfg.train_steps, "gradient_checkpointing": cfg.gradient_checkpointing,
            "seconds": seconds, "tokens_per_s": n_tokens / seconds,
            "peak_memory_mb": _peak_mb(device)}


def scan_inputs(batch: int, dim: int, length: int, device, dtype, seed: int = 0) -> dict:
    """Keyword arguments of ``selective_scan`` as the model calls it (softplus of delta with a
    bias, D skip, z gate, N 16), random: A = -exp(N(0, 0.5^2)), delta around -2 before the
    softplus (steps of ~0.13), the rest standard normal."""
    import torch

    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)  # drawn where they are used

    def rnd(*shape, scale=1.0, shift=0.0, keep_fp32=False):
        t = torch.randn(*shape, generator=g, device=device) * scale + shift
        return t if keep_fp32 else t.to(dtype)

    return dict(u=rnd(batch, dim, length), delta=rnd(batch, dim, length, shift=-2.0),
                A=-torch.exp(rnd(dim, 16, scale=0.5, keep_fp32=True)),
                B=rnd(batch, 16, length), C=rnd(batch, 16, length),
                D=rnd(dim, keep_fp32=True), z=rnd(batch, dim, length),
                delta_bias=rnd(dim, scale=0.1, keep_fp32=True), delta_softplus=True)


def bench_scan(cfg: BenchConfig, device, precision: str) -> list[dict]:
    """The selective scan alone at each shape: forward and forward+backward ms."""
    import torch

    from mambadna.kernels import selective_scan

    shapes = cfg.scan_shapes or (CUDA_SCAN_SHAPES if device.type == "cuda"
                                 else CPU_SCAN_SHAPES)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # about a second of calls per timing at most: an H100 scans ~5e10 (channel, position) pairs
    # a second forward and backward, two CPU cores ~1e7
    budget = 2e8 if device.type == "cuda" else 2e7
    rows = []
    for batch, dim, length in shapes:
        repeats = max(3, min(50, int(budget // (batch * dim * length))))
        _reset_peak(device)
        x = scan_inputs(batch, dim, length, device, dtype, cfg.seed)
        with torch.no_grad():
            fwd = _median_seconds(lambda x=x: selective_scan(**x), device, repeats)
        leaves = {k: v.requires_grad_() if isinstance(v, torch.Tensor) else v
                  for k, v in x.items()}
        inputs = [v for v in leaves.values() if isinstance(v, torch.Tensor)]
        d_out = torch.randn_like(x["u"])
        # autograd.grad, not backward(): repeated backward() calls would add every gradient
        # into .grad, work that is not the scan's
        fwd_bwd = _median_seconds(
            lambda x=leaves, i=inputs, d=d_out: torch.autograd.grad(selective_scan(**x), i, d),
            device, repeats)
        row = {"batch": batch, "channels": dim, "length": length, "repeats": repeats,
               "forward_ms": fwd * 1e3, "forward_backward_ms": fwd_bwd * 1e3,
               "peak_memory_mb": _peak_mb(device)}
        if device.type == "cuda":
            row["graph_forward_ms"] = graph_forward_seconds(x, device) * 1e3
        rows.append(row)
        del x, leaves, inputs, d_out
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def graph_forward_seconds(x: dict, device) -> float:
    """The scan's forward on ``x`` captured in a CUDA graph once and replayed (what
    fixed-shape inference does: no host work per call)."""
    import torch

    from mambadna.kernels import selective_scan

    with torch.no_grad():
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # kernels compiled and plans made outside the capture
                selective_scan(**x)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            selective_scan(**x)
    return _median_seconds(graph.replay, device, 50)


# ---------------------------------------------------------------------------- run


def _machine(device) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_bench(cfg: BenchConfig) -> dict:
    """Run the stages of ``cfg``; returns the report (also what ``--out`` holds as JSON)."""
    import torch

    from mambadna.model import MambaDNA, ModelConfig
    from mambadna.pipelines.inference import resolve_device

    device = resolve_device(None if cfg.device == "auto" else cfg.device)
    precision = cfg.precision if cfg.precision != "auto" else (
        "bf16" if device.type == "cuda" else "fp32")
    torch.manual_seed(cfg.seed)
    model = MambaDNA(ModelConfig.from_preset(cfg.preset)).to(device).eval()
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "mambadna": __version__, "device": str(device), "precision": precision,
              "preset": cfg.preset, "parameters": model.num_parameters(),
              "machine": _machine(device), "config": asdict(cfg)}
    with tempfile.TemporaryDirectory(prefix="mambadna-bench-", dir=cfg.work_dir) as folder:
        work = Path(folder)
        if "tokenize" in cfg.stages:
            report["tokenize"] = bench_tokenize(cfg, work)
        if "embed" in cfg.stages:
            report["embed"] = bench_embed(cfg, work, model, device)
        if "forward" in cfg.stages:
            report["forward"] = bench_forward(cfg, model, device, precision)
        if "train" in cfg.stages:
            report["train"] = bench_train(cfg, model, device, precision)
        if "scan" in cfg.stages:
            report["scan"] = bench_scan(cfg, device, precision)
    return report


def format_table(report: dict) -> str:
    """The report as a small text table."""
    rows = [("stage", "throughput", "seconds", "peak memory", "setting")]
    if "tokenize" in report:
        t = report["tokenize"]
        rows.append(("tokenize", f"{t['mb_per_s']:.1f} MB/s", f"{t['seconds']:.2f}", "-",
                     f"{t['megabytes']:.1f} MB FASTA"))
    if "embed" in report:
        e = report["embed"]
        rows.append(("embed", f"{e['bases_per_s']:,.0f} bases/s", f"{e['seconds']:.2f}",
                     f"{e['peak_memory_mb']:,.0f} MB",
                     f"window {e['window']:,}, batch {e['batch_size']}"
                     + (", stream" if e["stream"] else "")))
    if "forward" in report:
        f = report["forward"]
        graph = (f", graph {f['graph_bases_per_s']:,.0f} bases/s" if "graph_bases_per_s" in f
                 else "")
        rows.append(("forward", f"{f['bases_per_s']:,.0f} bases/s", f"{f['seconds']:.3f}",
                     f"{f['peak_memory_mb']:,.0f} MB",
                     f"window {f['window']:,} x batch {f['batch_size']}{graph}"))
    if "train" in report:
        t = report["train"]
        rows.append(("train", f"{t['tokens_per_s']:,.0f} tokens/s", f"{t['seconds']:.2f}",
                     f"{t['peak_memory_mb']:,.0f} MB",
                     f"seq {t['seq_len']:,} x batch {t['batch_size']}"))
    for r in report.get("scan", []):
        graph = (f", graph fwd {r['graph_forward_ms']:.3f} ms" if "graph_forward_ms" in r
                 else "")
        rows.append(("scan", f"fwd {r['forward_ms']:.3f} ms", "-",
                     f"{r['peak_memory_mb']:,.0f} MB",
                     f"({r['batch']}, {r['channels']}, {r['length']:,}): fwd+bwd "
                     f"{r['forward_backward_ms']:.3f} ms{graph}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    head = (f"mambadna {report['mambadna']} bench: {report['preset']} "
            f"({report['parameters']:,} parameters) on {report['device']}"
            f"{' (' + report['machine']['gpu'] + ')' if 'gpu' in report['machine'] else ''}, "
            f"{report['precision']}, {report['date']}")
    return "\n".join([head, *lines])


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write the report as JSON, atomically (mambadna.atomic)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError("the output folder does not exist", path=path.parent,
                          fix=f"create it (mkdir -p {path.parent}) or choose another --out")
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path


