"""The selective scan's tiling is chosen per call or per ``with`` block, never process-wide."""

from __future__ import annotations

import importlib
import sys
import threading

import pytest
import torch

from mambadna.kernels import TUNED, ScanConfig, scan_config, selective_scan
from mambadna.kernels.selective_scan.config import get_config, set_config


def test_blocks_nest_and_restore_even_on_errors():
    assert get_config() == ScanConfig() == TUNED["default"]
    with scan_config(chunk=128) as outer:
        assert get_config() is outer and outer.chunk == 128
        with scan_config("triton", stages=2) as inner:  # a TUNED name, then changes
            assert inner == ScanConfig(gluon=False, stages=2) and get_config() is inner
        with pytest.raises(RuntimeError), scan_config(fwd_warps=4):
            raise RuntimeError("inside")
        assert get_config() is outer
    assert get_config() == ScanConfig()


def test_a_block_changes_only_its_own_thread():
    seen = {}
    with scan_config(chunk=256):
        thread = threading.Thread(target=lambda: seen.setdefault("other", get_config()))
        thread.start()
        thread.join()
        assert get_config().chunk == 256
    assert seen["other"] == ScanConfig()


def test_bad_configurations_are_clear_errors():
    with pytest.raises(ValueError, match="unknown configuration 'fast'"):
        scan_config("fast")
    with pytest.raises(TypeError, match="expected a ScanConfig"):
        scan_config({"chunk": 64})
    with pytest.raises(ValueError, match="power of two"):
        ScanConfig(chunk=100)
    x = torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match="config must be a ScanConfig"):
        selective_scan(x, x, -torch.ones(2, 4), torch.randn(1, 4, 5), torch.randn(1, 4, 5),
                       config="triton")


def test_measured_best_table_is_small_and_distinct():
    assert set(TUNED) == {"default", "low-memory", "triton"}
    assert len(set(TUNED.values())) == len(TUNED)
    assert all(isinstance(c, ScanConfig) for c in TUNED.values())


def test_set_config_is_a_deprecated_process_default():
    with pytest.warns(DeprecationWarning, match="scan_config"):
        previous = set_config(gluon=False)
    try:
        assert previous == ScanConfig() and get_config() == ScanConfig(gluon=False)
        with scan_config(chunk=128):  # a block still wins
            assert get_config() == ScanConfig(gluon=False, chunk=128)
    finally:
        with pytest.warns(DeprecationWarning):
            set_config(previous)
    assert get_config() == ScanConfig()


def test_old_launcher_path_still_reaches_the_configuration():
    pytest.importorskip("triton")
    sys.modules.pop("mambadna.kernels.triton_scan", None)  # imported before: no warning again
    with pytest.warns(DeprecationWarning):
        # the 0.1 path of the README's fallback, set_config(gluon=False)
        triton_scan = importlib.import_module("mambadna.kernels.triton_scan")
    assert triton_scan.ScanConfig is ScanConfig and triton_scan.get_config is get_config
    assert triton_scan.set_config is set_config
