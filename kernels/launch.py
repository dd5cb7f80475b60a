"""Launch and configuration code shared by the ops' GPU kernels (no Triton import here).

- ``ConfigScope``: an op's tiling configuration (a frozen dataclass), read by its launcher at
  each call: the default, or the one set by the innermost ``use`` block of this thread / task.
  No process-wide switch: a configuration is an argument or a ``with`` block.
- ``interpreting``, ``num_sms``: where the kernels run (Triton's CPU interpreter, SM count).
- ``resident_programs`` (CUDA's occupancy rule) and ``resident_per_sm`` (a compiled kernel's):
  grids are sized to what the GPU holds at once.
- ``PlanCache``: a launcher's per-call-signature plans (cut, kernels, flags).
- ``empty`` and ``set_poison_outputs``: output buffers, NaN-filled under the tests' hook so an
  element that no kernel writes fails the comparison.
- ``row_ranges``, ``run_rows`` and ``address``: the compiled CPU kernels' launch (rows split
  across threads; the C code releases the GIL).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Generic, TypeVar

import torch

__all__ = ["ConfigScope", "PlanCache", "address", "cdiv", "empty", "interpreting", "maxnreg",
           "num_sms", "resident_per_sm", "resident_programs", "row_ranges", "run_rows",
           "set_poison_outputs"]

Config = TypeVar("Config")


class ConfigScope(Generic[Config]):
    """The configuration of one op: ``get()`` is the innermost ``use`` block's, else the default.

    A ``contextvars.ContextVar`` holds the override, so a ``with`` block changes only the calls
    made inside it, in its own thread or asyncio task. The backward pass must not read it (it
    may run in autograd's threads): launchers save the forward's configuration for it.
    """

    def __init__(self, name: str, default: Config) -> None:
        self.default = default
        self._current: contextvars.ContextVar[Config | None] = contextvars.ContextVar(
            name, default=None)

    def get(self) -> Config:
        current = self._current.get()
        return self.default if current is None else current

    @contextlib.contextmanager
    def use(self, config: Config | None = None, **changes) -> Iterator[Config]:
        """``with scope.use(cfg)`` / ``with scope.use(field=value)``: ``cfg`` (or the current
        configuration) with ``changes``, for the calls inside the block; yields it."""
        chosen = dataclasses.replace(self.get() if config is None else config, **changes)
        token = self._current.set(chosen)
        try:
            yield chosen
        finally:
            self._current.reset(token)


def interpreting() -> bool:
    """Whether Triton's interpreter runs the kernels (read when Triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def resident_programs(n_regs: int, num_warps: int, shared_bytes: int = 0) -> int:
    """Programs of a compiled kernel that one Hopper SM holds at once (CUDA's occupancy rule).

    Registers are allocated per warp in units of 256 from each of the 4 sub-partitions'
    16 384; at most 64 warps, 32 programs and 228 KiB of shared memory (1 KiB reserved per
    program) per SM.
    """
    per_warp = -(-max(n_regs, 1) * 32 // 256) * 256
    warps = 4 * (16384 // per_warp)
    by_regs = min(warps, 64) // num_warps
    by_shared = 233472 // (shared_bytes + 1024)
    return max(0, min(by_regs, by_shared, 32))


_resident_cache: dict[tuple, int] = {}


def resident_per_sm(kernel, args, flags) -> int | None:
    """Programs of ``kernel``, compiled for these arguments, that one SM holds at once.

    Compiles without launching (Triton caches it with the launch's own compile) the first time
    a kernel meets these constants, dtypes and device; None under the interpreter, where
    nothing is compiled. Remembered per key: a lookup costs less than Triton's own.
    """
    if interpreting():
        return None
    key = (kernel.fn.__module__, kernel.fn.__name__, tuple(sorted(flags.items())),
           tuple((str(a.dtype), a.device.index, a.data_ptr() % 16 == 0)
                 for a in args if isinstance(a, torch.Tensor)))
    if key not in _resident_cache:
        compiled = kernel.warmup(*args, grid=(1,), **flags)
        compiled._init_handles()  # loads the binary: n_regs is known from here on
        _resident_cache[key] = resident_programs(compiled.n_regs, compiled.metadata.num_warps,
                                                 compiled.metadata.shared)
    return _resident_cache[key]


def maxnreg(cap: int | None) -> dict:
    """Launch option capping registers per thread (none when ``cap`` is None)."""
    return {} if cap is None else {"maxnreg": cap}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class PlanCache:
    """A launcher's plans (cut, kernels and flags) by call signature.

    Planning takes about as long on the host as launching (occupancy lookups, geometry, the
    flags), and a short call (4096 positions) spends more time on the host than on the GPU.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._plans: dict[tuple, object] = {}

    def get(self, key: tuple):
        return self._plans.get(key)

    def get_or_make(self, key: tuple, make: Callable[[], object]):
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= self.maxsize:  # many shapes (variable-length batches)
                self._plans.clear()
            plan = self._plans[key] = make()
        return plan


_poison_outputs = False  # tests: fill outputs with NaN before the kernels write them


def set_poison_outputs(flag: bool) -> None:
    """Test hook: outputs start as NaN, so an element no kernel writes fails the comparison."""
    global _poison_outputs
    _poison_outputs = bool(flag)


def empty(shape, dtype, device) -> torch.Tensor:
    if _poison_outputs:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


@lru_cache(maxsize=8)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mambadna-cpu")


def row_ranges(rows: int, length: int, min_work: int) -> list[tuple[int, int]]:
    """Contiguous row ranges, one per thread (torch's intra-op thread count, as for its ops),
    each with at least ``min_work`` (row, position) pairs: below that a thread costs more than
    it saves."""
    threads = max(1, min(torch.get_num_threads(), rows, rows * length // min_work))
    bounds = [rows * k // threads for k in range(threads + 1)]
    return list(itertools.pairwise(bounds))


def run_rows(kernel, arguments: Callable[[int], list], ranges) -> None:
    """Run ``kernel(*arguments(k), row0, row1)`` for each row range k in parallel (the C code
    releases the GIL, so Python threads run it concurrently)."""
    if len(ranges) == 1:
        kernel(*arguments(0), *ranges[0])
        return
    futures = [_pool(len(ranges)).submit(kernel, *arguments(k), *r)
               for k, r in enumerate(ranges)]
    for future in futures:
        future.result()


def address(t: torch.Tensor | None) -> int:
    """A buffer's address for the C kernels, 0 for an absent optional one."""
    return 0 if t is None else t.data_ptr()
