"""Windows of the pipelines: coordinates at record ends, strides, partial windows, defaults."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mambadna.errors import ConfigError
from mambadna.pipelines.tiling import DEFAULT_WINDOW, WindowSpec, windows


def pairs(length, window, stride=None, min_window=None):
    return [tuple(p) for p in windows(length, window, stride, min_window).tolist()]


def test_non_overlapping_windows_and_the_last_partial_window():
    assert pairs(1000, 250) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    # A tail of 120 >= min_window (default 125 = half)? No: dropped.
    assert pairs(1120, 250) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert pairs(1130, 250) == [(0, 250), (250, 500), (500, 750), (750, 1000), (1000, 1130)]
    assert pairs(1120, 250, min_window=120)[-1] == (1000, 1120)
    assert pairs(1120, 250, min_window=121)[-1] == (750, 1000)


def test_short_records_yield_one_window_or_none():
    assert pairs(180, 250) == [(0, 180)]
    assert pairs(125, 250) == [(0, 125)]
    assert pairs(124, 250) == []
    assert pairs(0, 250) == []
    assert pairs(1, 1) == [(0, 1)]


def test_overlapping_strides_keep_one_tail_that_adds_bases():
    assert pairs(100, 40, 20) == [(0, 40), (20, 60), (40, 80), (60, 100)]
    # Starts 0, 20, 40 are full; 60 -> [60, 90) adds bases 80..90; 80 would add nothing new.
    assert pairs(90, 40, 20, min_window=10) == [(0, 40), (20, 60), (40, 80), (60, 90)]
    assert pairs(90, 40, 20, min_window=31) == [(0, 40), (20, 60), (40, 80)]


def test_strides_longer_than_the_window_leave_gaps():
    assert pairs(100, 30, 40, min_window=10) == [(0, 30), (40, 70), (80, 100)]
    assert pairs(100, 30, 40, min_window=21) == [(0, 30), (40, 70)]


def test_output_is_int64_pairs():
    out = windows(10**10, 10**9)
    assert out.dtype == np.int64 and out.shape == (10, 2) and out[-1, 1] == 10**10


@settings(max_examples=200, deadline=None)
@given(length=st.integers(0, 5000), window=st.integers(1, 600), stride=st.integers(1, 900),
       min_window=st.integers(1, 600))
def test_window_properties(length, window, stride, min_window):
    min_window = min(min_window, window)
    out = windows(length, window, stride, min_window)
    starts, ends = out[:, 0], out[:, 1]
    assert np.all((0 <= starts) & (starts < ends) & (ends <= length))
    assert np.all(starts % stride == 0) and np.all(np.diff(starts) == stride)
    sizes = ends - starts
    assert np.all(sizes[:-1] == window) if len(out) else True
    if len(out):
        assert sizes[-1] == window or (sizes[-1] >= min_window and ends[-1] == length)
    if not len(out):
        assert length < min_window
    elif stride <= window:  # windows touch or overlap: only a tail < min_window is left out
        assert length - ends[-1] < min_window


def test_spec_defaults_come_from_the_model_then_the_package():
    spec = WindowSpec.resolve(window=None, stride=None, min_window=None, stream=False,
                              trained_length=300)
    assert (spec.window, spec.stride, spec.min_window) == (300, 300, 150)
    spec = WindowSpec.resolve(window=None, stride=None, min_window=None, stream=False,
                              trained_length=None)
    assert spec.window == DEFAULT_WINDOW
    spec = WindowSpec.resolve(window=64, stride=16, min_window=1, stream=False,
                              trained_length=300)
    assert (spec.window, spec.stride, spec.min_window) == (64, 16, 1)
    assert spec.of(70).tolist() == [[0, 64], [16, 70]]


def test_spec_rejects_bad_combinations():
    with pytest.raises(ConfigError, match="--stream walks each record"):
        WindowSpec(window=64, stride=32, min_window=32, stream=True)
    with pytest.raises(ConfigError, match=r"--min-window .* cannot exceed"):
        WindowSpec(window=64, stride=64, min_window=65)
    with pytest.raises(ConfigError, match="--window must be a positive integer"):
        WindowSpec(window=0, stride=64, min_window=1)
    with pytest.raises(ConfigError):
        windows(10, 0)
