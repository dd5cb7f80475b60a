"""mambadna.allocator: with retain_freed_memory() large tensors freed and allocated again reuse
their pages (no page faults the second time); without it, glibc maps fresh pages each time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only"),
    pytest.mark.slow,  # each test starts a Python that imports torch: 4-5 s on 2 cores
]

# Page faults of rounds 3-6 of four tensors alive together (as a model block's temporaries
# are), in a fresh process. The first rounds fault either way (new pages, and the heap settling
# into its final layout).
#
# The tensors are 64 MiB (16,384 pages of 4 KiB each, 65,536 a round): above 32 MiB, the most
# that glibc's adaptive mmap threshold rises to on 64-bit machines, so default malloc maps each
# one afresh and unmaps it on free, whatever the heap's state. At the model's 16 MiB the default
# depends on that state (the threshold rises after the first free, and the heap's top is trimmed
# only when nothing small sits above the freed tensors): one run faults a round or more, another
# a quarter of one. The setting removes the faults in both cases; only the large size makes the
# default's count a fixed fact to test.
PROGRAM = """
import resource, sys
import torch
from mambadna.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
torch.set_num_threads(1)
def fill():
    alive = [torch.ones(16 << 20) for _ in range(4)]
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
    assert faults <= 65_536, faults  # at most one round of four (the default faults all four)


def test_default_malloc_maps_fresh_pages():
    applied, faults = _late_round_faults("default")
    assert applied == "False"
    assert faults >= 4 * 65_536, faults  # every tensor of every round: what the setting saves


def test_disabled_by_environment():
    applied, faults = _late_round_faults("retain", MAMBADNA_MALLOC="0")
    assert applied == "False" and faults >= 4 * 65_536, faults
