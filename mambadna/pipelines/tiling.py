"""Windows over a record: where classify and embed look, in 0-based half-open coordinates.

``windows(length, window, stride, min_window)`` places windows of ``window`` bases every
``stride`` bases from position 0. Full windows are all kept. After the last full window, one
partial window (starting at the next stride step) is kept if it reaches bases no full window
covered and holds at least ``min_window`` bases; a record shorter than ``window`` thus yields
one window ``[0, length)`` if ``length >= min_window``, else none.

Defaults (``WindowSpec.resolve``): the window is the length the model was trained on (its
``training_info["seq_len"]``), else ``DEFAULT_WINDOW``; the stride equals the window
(non-overlapping); ``min_window`` is half the window. In stream mode the windows are consecutive
(the stride must equal the window), because the recurrent state walks every base once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mambadna.errors import ConfigError

DEFAULT_WINDOW = 1024
"""Window used when neither the caller nor the model's training info gives one."""


def window_count(length: int, window: int, stride: int | None = None,
                 min_window: int | None = None) -> int:
    """How many windows ``windows(length, ...)`` has, without building them.

    Window i is [i * stride, min(i * stride + window, length)): only the last one can be
    partial, so a caller can walk the windows of a record of any length in O(1) memory.
    """
    stride = window if stride is None else stride
    min_window = max(1, window // 2) if min_window is None else min_window
    if window < 1 or stride < 1 or min_window < 1:
        raise ConfigError(f"window, stride and min_window must be >= 1, got window={window}, "
                          f"stride={stride}, min_window={min_window}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    n_full = (length - window) // stride + 1 if length >= window else 0
    covered = (n_full - 1) * stride + window if n_full else 0
    tail_start = n_full * stride
    # With stride < window the next start may lie inside covered bases: keep the tail only if it
    # adds bases, and only once.
    tail = tail_start < length and length > covered and length - tail_start >= min_window
    return n_full + int(tail)


def windows(length: int, window: int, stride: int | None = None,
            min_window: int | None = None) -> np.ndarray:
    """(start, end) pairs of the windows over a record of ``length`` bases.

    Returns an int64 array of shape (n_windows, 2), ordered by start. ``stride`` defaults to
    ``window``; ``min_window`` (the smallest last partial window kept) to ``window // 2``.
    """
    stride = window if stride is None else stride
    starts = np.arange(window_count(length, window, stride, min_window), dtype=np.int64) * stride
    return np.stack([starts, np.minimum(starts + window, length)], axis=1)


@dataclass(frozen=True)
class WindowSpec:
    """How a pipeline cuts records into windows (bases; 0-based half-open coordinates)."""

    window: int
    """Bases per window."""
    stride: int
    """Bases between the starts of consecutive windows."""
    min_window: int
    """Smallest last partial window kept; shorter tails (and records) yield no window."""
    stream: bool = False
    """Carry the model's recurrent state along each record from window to window."""

    def __post_init__(self) -> None:
        for name in ("window", "stride", "min_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, "
                                  f"got {value!r}")
        if self.min_window > self.window:
            raise ConfigError(f"--min-window ({self.min_window}) cannot exceed --window "
                              f"({self.window})", fix="lower --min-window or raise --window")
        if self.stream and self.stride != self.window:
            raise ConfigError(
                f"--stream walks each record in consecutive windows, so --stride ({self.stride})"
                f" must equal --window ({self.window})",
                fix="leave --stride out in stream mode (rows every --window bases)")

    @classmethod
    def resolve(cls, *, window: int | None, stride: int | None, min_window: int | None,
                stream: bool, trained_length: int | None) -> WindowSpec:
        """Fill unset values with the documented defaults (see the module docstring)."""
        if window is None:
            window = trained_length or DEFAULT_WINDOW
        if stride is None:
            stride = window
        if min_window is None:
            min_window = min(window, max(1, window // 2))
        return cls(window=window, stride=stride, min_window=min_window, stream=stream)

    def of(self, length: int) -> np.ndarray:
        """``windows(length, ...)`` with this spec: (n_windows, 2) int64 start/end pairs."""
        return windows(length, self.window, self.stride, self.min_window)

    def count(self, length: int) -> int:
        """Number of windows over ``length`` bases."""
        return window_count(length, self.window, self.stride, self.min_window)

    def span(self, length: int, i: int) -> tuple[int, int]:
        """Window ``i`` (0 <= i < count(length)) as (start, end)."""
        start = i * self.stride
        return start, min(start + self.window, length)

    def to_dict(self) -> dict:
        return {"window": self.window, "stride": self.stride, "min_window": self.min_window,
                "stream": self.stream}
