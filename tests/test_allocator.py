"""mambadna.allocator: with retain_freed_memory() large tensors freed and allocated again reuse
their pages (no page faults the second time); without it, glibc maps fresh pages each time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

# Page faults of rounds 3-6 of four 16 MiB tensors alive together (as a model block's
# temporaries are; 16,384 pages of 4 KiB a round), in a fresh process. The first rounds fault
# either way (new pages, and the heap settling into its final layout).
PROGRAM = """
import resource, sys
import torch
from mambadna.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
torch.set_num_threads(1)
def fill():
    alive = [torch.ones(4 << 20) for _ in range(4)]
    return float(sum(t[::1024].sum() for t in alive))
fill(); fill()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    fill()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _late_round_faults(mode: str, **env) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1])


def test_retained_memory_is_reused_without_page_faults():
    applied, faults = _late_round_faults("retain")
    assert applied == "True"
    assert faults <= 8192, faults  # at most half of one round, in four


def test_default_malloc_maps_fresh_pages():
    applied, faults = _late_round_faults("default")
    assert applied == "False"
    assert faults >= 16_384, faults  # a round's worth or more: what the setting saves


def test_disabled_by_environment():
    applied, faults = _late_round_faults("retain", MAMBADNA_MALLOC="0")
    assert applied == "False" and faults >= 16_384
