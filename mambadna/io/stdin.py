"""``-`` as an input: the standard input, read once, as it streams (``samtools view -b | ...``).

A pipe cannot seek, yet formats and compression are detected from the content before a reader
starts. So the first bytes are buffered (``HEAD_SIZE``, raw, as they arrive): detection looks at
that buffer, and the one reader that then consumes the input gets the buffer followed by the
rest of the stream. Nothing is spooled to disk, so memory does not grow with the input.

What a pipe cannot do is said as an error, not worked around: a second pass (an input named
``-`` twice, or a reader opened twice), random access (regions, a .fai index).
pysam reads BAM/CRAM/SAM from a file descriptor, so it is given the read end of a pipe that a
thread fills with the buffer and the rest of the input.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from typing import BinaryIO

from mambadna.errors import ConfigError, InputFileError

STDIN = "-"
HEAD_SIZE = 256 << 10  # raw bytes buffered for detection: 64 KiB of text even when gzipped
_FIX_ONCE = "pass it once, or write it to a file first"


def is_stdin(path) -> bool:
    """Whether ``path`` names the standard input (``-``, as samtools writes it)."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path) == STDIN


class _Stdin:
    """The standard input: its buffered head and whether a reader has taken it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.head = b""
        self.taken = False
        self.complete = False
        """Whether the head is the whole input (it ended within HEAD_SIZE)."""
        while len(self.head) < HEAD_SIZE:  # a pipe returns what has arrived: read until full
            chunk = stream.read(HEAD_SIZE - len(self.head))
            if not chunk:
                self.complete = True
                break
            self.head += chunk

    def take(self) -> BinaryIO:
        """The whole input as a file object (head, then the rest): once only."""
        if self.taken:
            raise ConfigError("the standard input ('-') can be read only once", path=STDIN,
                              fix=_FIX_ONCE)
        self.taken = True
        return _Replay(self.head, self.stream)


class _Replay(io.RawIOBase):
    """A read-only stream of ``head`` followed by ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if len(self._head):
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


_current: tuple[object, _Stdin] | None = None


def stdin() -> _Stdin:
    """The buffered standard input of this process (buffered on first use)."""
    global _current
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    if _current is None or _current[0] is not stream:  # a new stdin (tests swap it)
        if sys.stdin is None or (hasattr(sys.stdin, "isatty") and sys.stdin.isatty()):
            raise InputFileError("nothing is piped into the standard input ('-')", path=STDIN,
                                 fix="pipe the data in (samtools view -b reads.bam | mambadna "
                                     "classify ... -), or pass a file name")
        _current = (stream, _Stdin(stream))
    return _current[1]


def open_stdin() -> BinaryIO:
    """The standard input, buffered head first, for the one reader that consumes it."""
    return io.BufferedReader(stdin().take(), buffer_size=1 << 20)


def stdin_pipe() -> BinaryIO:
    """The read end of a pipe carrying the whole standard input (for pysam, which reads a
    file descriptor); a daemon thread writes it and stops when the reader closes it."""
    source = open_stdin()
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        try:
            with os.fdopen(write_fd, "wb") as sink:
                while block := source.read(1 << 20):
                    sink.write(block)
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader stopped early (an error, or only some reads were wanted)

    threading.Thread(target=feed, name="mambadna-stdin", daemon=True).start()
    return os.fdopen(read_fd, "rb")


def check_stdin(paths, *, regions: bool = False) -> None:
    """Refuse what the standard input cannot do: ``-`` given more than once (it can be read
    only once), or with regions (a query needs an indexed file)."""
    count = sum(is_stdin(p) for p in paths)
    if count > 1:
        raise ConfigError("'-' (the standard input) is given more than once", path=STDIN,
                          fix=_FIX_ONCE)
    if count and regions:
        raise ConfigError("a region query needs an indexed file, and the standard input "
                          "cannot be indexed", path=STDIN,
                          fix="write the input to a file and index it (samtools index / "
                              "samtools faidx), or leave out --region")
