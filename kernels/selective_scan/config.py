"""Tiling of the Triton selective scan: ``ScanConfig``, the measured-best table, and how to choose.

A configuration is chosen per call, never for the whole process::

    selective_scan(u, delta, A, B, C, ..., config=ScanConfig(gluon=False))
    with scan_config(TUNED["low-memory"]):        # every call inside, e.g. a model's forward
        model(tokens).sum().backward()
    with scan_config(chunk=128):                  # the current configuration with one change
        ...

The defaults are the fastest measured on an H200 (bf16 u / delta / z, N = 16); what each field
does to the kernels is in docs/kernels.md, the runs behind each default in docs/runlog.md.
No Triton import here: the configuration can be built and checked on any machine.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

from mambadna.kernels.launch import ConfigScope

__all__ = ["TUNED", "ScanConfig", "get_config", "scan_config", "set_config"]


@dataclass(frozen=True)
class ScanConfig:
    """Tiling choices of the Triton selective scan (defaults: the fastest measured on an H200)."""

    fwd_warps: int = 2  # warps per forward output-pass program
    bwd_warps: int = 1  # warps per backward program
    # Warps per summary-pass program (None: as the pass it summarizes); each pass has its own
    # channel tiles. One-warp forward summaries need no barrier between warps.
    fwd_summary_warps: int | None = 1
    bwd_summary_warps: int | None = None
    fwd_channels_per_thread: int = 1  # a program owns 32 * warps * this many channels
    bwd_channels_per_thread: int = 1
    # Positions between the states the forward saves for the backward (X: 64 / chunk bytes per
    # channel and position); at 64 the backward's per-program scratch fits in L1.
    chunk: int = 64
    min_chunk: int = 64  # smallest chunk chosen for short sequences (more segments)
    fwd_cut: int = 256  # the forward cuts L in whole units of this many positions (>= a chunk)
    # Forward: short sequences get chunks short enough for (segments x channel tiles) >= this
    # x SMs; the cut then fills the resident programs in whole turns (fwd_turns) or, with
    # fwd_turns off, is that many segments.
    programs_per_sm: int = 16
    fwd_turns: bool = True
    # Backward: a persistent grid of as many programs as the SMs hold at once (the compiled
    # kernel's occupancy; 16 per SM under the interpreter) unless set here.
    bwd_programs_per_sm: int | None = None
    segments: int | None = None  # force the forward's number of segments (tests)
    bwd_segments: int | None = None  # force the backward's (tests); None: whole turns
    stages: int = 3  # software-pipelining depth of the forward and adjoint-summary tile loops
    # Positions per thread tile (4 or 8); None: 16-byte rows (8 positions of 16-bit inputs,
    # 4 of fp32: 8 fp32 positions would lay a row over two lanes).
    tile: int | None = None
    bwd_stages: int = 1  # > 1: Triton pipelines the backward's state loop (slower on the H200)
    # Caps on registers per thread (more resident warps); the output pass at 128 holds 8
    # programs per SM instead of 6.
    fwd_maxnreg: int | None = 128
    fwd_summary_maxnreg: int | None = None  # the forward's summary pass
    bwd_maxnreg: int | None = None
    bwd_prefetch: bool = True  # backward: the next tile's B / C blocks prefetched into L1
    # Tile columns picked by integer sums in every pass (Triton 3.6 keeps float picks as adds).
    bit_picks: bool = True
    # The forward passes and the adjoint summary in Gluon (``gluon.py``) where they apply: CUDA,
    # aligned rows, N a power of two; elsewhere, and under the interpreter, the Triton kernels.
    gluon: bool = True

    def __post_init__(self) -> None:
        for name in ("chunk", "min_chunk", "fwd_cut"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"ScanConfig.{name} must be a power of two, got {v}")
        for name in ("fwd_warps", "bwd_warps", "fwd_summary_warps", "bwd_summary_warps"):
            v = getattr(self, name)
            if v not in (1, 2, 4, 8) and not (v is None and "summary" in name):
                raise ValueError(f"ScanConfig.{name} must be 1, 2, 4 or 8")
        for name in ("fwd_channels_per_thread", "bwd_channels_per_thread"):
            if getattr(self, name) not in (1, 2, 4):
                raise ValueError(f"ScanConfig.{name} must be 1, 2 or 4")
        for name in ("stages", "bwd_stages"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScanConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("fwd_maxnreg", "fwd_summary_maxnreg", "bwd_maxnreg"):
            v = getattr(self, name)
            if v is not None and not 24 <= v <= 255:
                raise ValueError(f"ScanConfig.{name} must be None or 24..255, got {v}")
        if self.tile not in (None, 4, 8):
            raise ValueError(f"ScanConfig.tile must be None, 4 or 8, got {self.tile}")


# The measured-best configurations (one H200, Triton 3.6, bf16, N = 16, (1, 1024, 2^20);
# docs/runlog.md, sixth and seventh sessions). Every other variant in the log was slower than
# its run's default there, or equal to a default of its day.
TUNED: dict[str, ScanConfig] = {
    # Fastest at every benchmark shape: forward 14.65 ms, forward+backward 79.4 ms.
    "default": ScanConfig(),
    # Saves three quarters of the states kept for the backward (X: 0.25 GiB instead of 1 at
    # 2^20) for 1.6-2.0 % more forward+backward time (80.7-81.1 ms), the same forward.
    "low-memory": ScanConfig(chunk=256),
    # The Triton kernels everywhere, for a Triton whose Gluon dialect fails to compile ours:
    # forward 1.13x, forward+backward 1.03x the default's time.
    "triton": ScanConfig(gluon=False),
}

_scope: ConfigScope[ScanConfig] = ConfigScope("mambadna.kernels.selective_scan.config",
                                              ScanConfig())


def get_config() -> ScanConfig:
    """The configuration a call without ``config=`` uses here (the innermost ``scan_config``)."""
    return _scope.get()


def scan_config(config: ScanConfig | str | None = None,
                **changes) -> AbstractContextManager[ScanConfig]:
    """Context manager: calls inside the block use ``config`` (a ScanConfig or a name in
    ``TUNED``; None: the current one) with the fields in ``changes``; yields it."""
    if isinstance(config, str):
        if config not in TUNED:
            raise ValueError(f"scan_config: unknown configuration {config!r}; "
                             f"choose from {', '.join(TUNED)} or pass a ScanConfig")
        config = TUNED[config]
    if config is not None and not isinstance(config, ScanConfig):
        raise TypeError(f"scan_config: expected a ScanConfig, got {type(config).__name__}")
    return _scope.use(config, **changes)


def set_config(config: ScanConfig | None = None, **changes) -> ScanConfig:
    """Deprecated (removed in 0.2): use ``with scan_config(...)`` or ``config=``.

    Replaces the default configuration of every call in the process (or changes fields of
    it); returns the previous default."""
    warnings.warn("set_config is deprecated and will be removed in mambadna 0.2: pass "
                  "config=ScanConfig(...) to selective_scan or use `with scan_config(...)`",
                  DeprecationWarning, stacklevel=2)
    previous = _scope.default
    _scope.default = replace(config or previous, **changes)
    return previous
