"""Keep freed memory in the process for reuse (glibc's malloc), for CPU runs of the model.

Why: the model's CPU forward allocates a few tensors of (batch, d_inner, L) floats per block
(16 MiB each for paper-1.4m at 16,384 bases). glibc hands allocations over its mmap threshold
straight to the kernel and returns them on free, and it trims the top of its heap, so every
such tensor arrives as fresh pages that the kernel must zero on first touch. Measured on a
2-core machine (paper-1.4m, 16,384 bases, 1 thread): a 16 MiB copy took 25 ms into fresh pages
against 0.75 ms into reused ones, the causal convolution 31 against 9 ms, and the whole
forward 2.00 against 1.64 s (BENCHMARKS.md, "Model forward on CPU").

``retain_freed_memory()`` tells glibc to serve every allocation from its heap and never to give
freed memory back: the second and later forwards reuse the first one's pages. The cost is that
the process keeps its peak size until it exits, which suits a command that runs one job. The
command line calls it when it starts; library users call it themselves (or not). It does
nothing where the C library is not glibc, or with MAMBADNA_MALLOC=0. Imports nothing of
mambadna.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["retain_freed_memory"]

# mallopt parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt's int takes: bytes kept free at the top

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Serve allocations from malloc's heap and keep freed memory for reuse (glibc only).

    Returns whether the settings are in effect. Safe to call more than once; applies to the
    whole process from the call on.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("MAMBADNA_MALLOC", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return _applied
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _applied
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # No mmap for allocations (large ones come from the heap, whose pages are reused) and no
    # trimming (freed pages stay mapped). mallopt returns 1 on success.
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _applied
