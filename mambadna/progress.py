"""Progress bars on stderr (tqdm) for the long commands: tokenize, validate, simulate, fetch,
classify, embed.

A bar is shown only when asked for and stderr is a terminal: ``enabled=None`` (the default of
every library function) means "if stderr is a terminal", ``False`` (``--quiet``) never, ``True``
always (tests, or a caller that wants it in a log). A disabled bar is tqdm's own no-op, so the
callers update it unconditionally. Torch-free; imports nothing of mambadna.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["DownloadBars", "bar", "shown"]


def shown(enabled: bool | None, stream: TextIO | None = None) -> bool:
    """Whether a bar asked for with ``enabled`` is drawn on ``stream`` (default stderr)."""
    if enabled is not None:
        return bool(enabled)
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def bar(desc: str, total: float | None = None, *, unit: str = "b",
        enabled: bool | None = None, stream: TextIO | None = None,
        unit_scale: bool = True, leave: bool = True, initial: float = 0) -> tqdm:
    """A tqdm bar on stderr: ``desc``, done of ``total`` (None: a count and a rate) in ``unit``
    (bases "b", bytes "B", or a word), SI-scaled, from ``initial``. Disabled unless
    ``shown(enabled)``."""
    stream = stream or sys.stderr
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave,
                initial=initial, file=stream, disable=not shown(enabled, stream),
                dynamic_ncols=True, mininterval=0.5, smoothing=0.1)


class DownloadBars:
    """The ``progress(name, done, total)`` callback of ``mambadna.manifests.fetch``: one byte
    bar per file, closed when the file is complete (or the next one starts)."""

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.enabled, self.stream = enabled, stream
        self._name: str | None = None
        self._bar: tqdm | None = None

    def __call__(self, name: str, done: int, total: int | None) -> None:
        if name != self._name or self._bar is None:
            self.close()
            self._name = name
            # a resumed download starts at its .part size: the bar starts there too
            self._bar = bar(name, total, unit="B", enabled=self.enabled, stream=self.stream,
                            initial=done)
        else:
            self._bar.update(done - self._bar.n)
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = self._name = None
