"""Records as token arrays, held-out splits, and random or tiled windows over them. Torch-free.

- ``TokenSource``: the records of a token store (memory-mapped, opened lazily in each worker) or
  of arrays in memory, addressed by row number.
- ``holdout_split``: train/validation spans that never share a base: whole records held out when
  a file has several, else the end region of every record.
- ``WindowSampler``: a random window from spans (record with probability proportional to its
  length, uniform offset), skipping windows with too many N, optional reverse complement.
  Every draw is a function of the numpy Generator it is given: datasets seed one per example
  index, which makes the data stream reproducible and resumable.
- ``tile_windows``: fixed, non-overlapping evaluation windows spread evenly over spans.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mambadna.alphabet import N, reverse_complement
from mambadna.errors import ConfigError, InputError
from mambadna.io.records import format_region

MAX_DRAWS = 1000  # rejected windows (too many N) before sampling gives up


class TokenSource:
    """Token arrays (uint8, mambadna.alphabet ids) of records, addressed by row 0..n-1.

    names / sources / lengths: one entry per record (sources: the file each came from).
    Store-backed sources open their memmaps lazily and drop them when pickled, so DataLoader
    workers map the files themselves instead of receiving copies of the genome.
    """

    def __init__(self, names: Sequence[str], sources: Sequence[str], lengths: Sequence[int], *,
                 store_path: str | os.PathLike | None = None,
                 arrays: Sequence[np.ndarray] | None = None) -> None:
        self.names = list(names)
        self.sources = list(sources)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.store_path = Path(store_path) if store_path is not None else None
        self._arrays: list[np.ndarray] | None = list(arrays) if arrays is not None else None
        self._store = None

    @classmethod
    def from_store(cls, store) -> TokenSource:
        """The records of a TokenStore (or the path of one)."""
        from mambadna.data.store import TokenStore

        if not isinstance(store, TokenStore):
            store = TokenStore(store)
        return cls(store.names, store.sources, store.lengths, store_path=store.path)

    @classmethod
    def from_arrays(cls, records: Iterable[tuple[str, np.ndarray]],
                    source: str = "<memory>") -> TokenSource:
        """In-memory records: ``(name, uint8 tokens)`` pairs, all from ``source``."""
        names, arrays = [], []
        for name, tokens in records:
            names.append(name)
            arrays.append(np.ascontiguousarray(tokens, dtype=np.uint8))
        return cls(names, [source] * len(names), [len(a) for a in arrays], arrays=arrays)

    def __len__(self) -> int:
        return len(self.names)

    def tokens(self, i: int) -> np.ndarray:
        """Record ``i`` as a 1-D uint8 array (a read-only memmap for stores)."""
        if self._arrays is not None:
            return self._arrays[i]
        if self._store is None:
            from mambadna.data.store import TokenStore

            self._store = TokenStore(self.store_path)
        return self._store[i]

    def label(self, i: int) -> str:
        """``file:record`` for messages and split descriptions."""
        return f"{self.sources[i]}:{self.names[i]}"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None
        return state


@dataclass(frozen=True)
class Span:
    """Bases ``[start, end)`` of record ``record`` (a row of a TokenSource)."""

    record: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Split:
    """Train and validation spans; ``rule`` says how they were chosen."""

    train: list[Span]
    val: list[Span]
    rule: str

    def describe(self, source: TokenSource) -> dict:
        """A YAML-ready summary: the rule and the held-out records or regions."""
        held = []
        for s in self.val:
            whole = s.start == 0 and s.end == source.lengths[s.record]
            # file:REGION, the region in samtools' notation (1-based, inclusive)
            held.append(source.label(s.record) if whole else f"{source.sources[s.record]}:"
                        f"{format_region(source.names[s.record], s.start, s.end)}")
        return {"rule": self.rule, "val": held,
                "train_bases": int(sum(s.length for s in self.train)),
                "val_bases": int(sum(s.length for s in self.val))}


def whole_records(source: TokenSource, records: Iterable[int] | None = None) -> list[Span]:
    """One span per record (all records when ``records`` is None)."""
    rows = range(len(source)) if records is None else records
    return [Span(int(i), 0, int(source.lengths[i])) for i in rows]


def _held_out_records(lengths: np.ndarray, fraction: float) -> int:
    """How many records, counted from the end, to hold out; 0 when whole records do not fit.

    Whole records are held out when they reach ``fraction`` of the bases without taking more
    than twice that share and while leaving at least one record for training.
    """
    total, target, taken = int(lengths.sum()), fraction * int(lengths.sum()), 0
    for k in range(1, len(lengths)):
        taken += int(lengths[-k])
        if taken >= target:
            return k if taken <= 2 * target and taken < total else 0
    return 0


def holdout_split(source: TokenSource, records: Sequence[int] | None = None,
                  val_fraction: float = 0.05) -> Split:
    """Split records into train and validation spans that never overlap.

    Records are grouped by the file they came from. In a file with several records, the last
    records (file order) whose lengths add up to about ``val_fraction`` of the file are held out
    whole (chromosome-level hold-out). A file with one record, or whose records are too uneven
    for that, holds out the last ``val_fraction`` of every record instead (region hold-out).
    ``val_fraction == 0`` keeps everything for training.
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rows = list(range(len(source))) if records is None else list(records)
    groups: dict[str, list[int]] = {}
    for i in rows:
        groups.setdefault(source.sources[i], []).append(i)
    train: list[Span] = []
    val: list[Span] = []
    rules = set()
    for group in groups.values():
        if val_fraction == 0:
            train += whole_records(source, group)
            rules.add("none")
            continue
        k = _held_out_records(source.lengths[group], val_fraction)
        if k:
            train += whole_records(source, group[:-k])
            val += whole_records(source, group[-k:])
            rules.add("records")
            continue
        for i in group:
            length = int(source.lengths[i])
            cut = length - math.ceil(length * val_fraction)
            train.append(Span(i, 0, cut))
            val.append(Span(i, cut, length))
        rules.add("regions")
    return Split(train, val, rules.pop() if len(rules) == 1 else "mixed")


def n_fraction(tokens: np.ndarray) -> float:
    """Share of N tokens in a window."""
    return float(np.count_nonzero(tokens == N)) / max(1, len(tokens))


class WindowSampler:
    """Random windows of a given length from spans of a TokenSource.

    A draw picks a span with probability proportional to its length (among spans at least as
    long as the window), a uniform offset inside it, and rejects the window if more than
    ``max_n_fraction`` of it is N (drawing again, up to MAX_DRAWS times). With probability
    ``rc_prob`` the window is reverse-complemented. ``what`` names the data in errors.
    """

    def __init__(self, source: TokenSource, spans: Sequence[Span], *,
                 max_n_fraction: float = 0.1, rc_prob: float = 0.0,
                 what: str = "the training data") -> None:
        if not 0 <= max_n_fraction <= 1:
            raise ConfigError(f"max_n_fraction must be in [0, 1], got {max_n_fraction}")
        if not 0 <= rc_prob <= 1:
            raise ConfigError(f"rc_prob must be in [0, 1], got {rc_prob}")
        self.source = source
        self.spans = [s for s in spans if s.length > 0]
        self.max_n_fraction = max_n_fraction
        self.rc_prob = rc_prob
        self.what = what
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def longest(self) -> int:
        """Length of the longest span (0 without spans)."""
        return max((s.length for s in self.spans), default=0)

    @property
    def total_length(self) -> int:
        return sum(s.length for s in self.spans)

    def check(self, seq_len: int) -> None:
        """ConfigError unless some span holds a window of ``seq_len`` bases."""
        if self.longest < seq_len:
            raise ConfigError(
                f"no sequence in {self.what} is long enough for a window of {seq_len} bases "
                f"(the longest is {self.longest})",
                fix="lower --seq-len (and --warmup-start), or add longer sequences")

    def _table(self, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices of spans >= seq_len, cumulative lengths of those spans)."""
        if seq_len not in self._tables:
            self.check(seq_len)
            usable = np.array([i for i, s in enumerate(self.spans) if s.length >= seq_len])
            weights = np.array([self.spans[i].length for i in usable], dtype=np.float64)
            self._tables[seq_len] = (usable, np.cumsum(weights))
        return self._tables[seq_len]

    def sample(self, rng: np.random.Generator, seq_len: int) -> np.ndarray:
        """One window: uint8 tokens of shape (seq_len,) (a copy, safe to modify)."""
        usable, cum = self._table(seq_len)
        for _ in range(MAX_DRAWS):
            pick = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
            span = self.spans[usable[min(pick, len(usable) - 1)]]
            start = int(rng.integers(span.start, span.end - seq_len + 1))
            flip = rng.random() < self.rc_prob
            window = self.source.tokens(span.record)[start:start + seq_len]
            if n_fraction(window) <= self.max_n_fraction:
                return reverse_complement(window) if flip else np.array(window)
        raise InputError(
            f"{MAX_DRAWS} random windows of {seq_len} bases from {self.what} all had more "
            f"than {self.max_n_fraction:.0%} N",
            fix="raise --max-n-fraction, lower --seq-len, or remove N-only sequences")


def _acceptable_tiles(tokens: np.ndarray, span: Span, seq_len: int,
                      max_n: int) -> np.ndarray:
    """Starts of the span's non-overlapping tiles with at most ``max_n`` N (chunked scan)."""
    count = span.length // seq_len
    rows_per_chunk = max(1, (1 << 24) // seq_len)
    ok = []
    for first in range(0, count, rows_per_chunk):
        rows = min(rows_per_chunk, count - first)
        begin = span.start + first * seq_len
        block = np.asarray(tokens[begin:begin + rows * seq_len]).reshape(rows, seq_len)
        n_per_tile = np.count_nonzero(block == N, axis=1)
        ok.append(begin + seq_len * np.flatnonzero(n_per_tile <= max_n))
    return np.concatenate(ok) if ok else np.empty(0, dtype=np.int64)


def tile_windows(source: TokenSource, spans: Sequence[Span], seq_len: int, max_windows: int,
                 max_n_fraction: float = 0.1) -> list[tuple[int, int]]:
    """Up to ``max_windows`` fixed evaluation windows ``(record, start)`` of ``seq_len`` bases.

    The spans are cut into non-overlapping tiles; tiles with more than ``max_n_fraction`` N
    are dropped, and the windows are chosen evenly spaced over the remaining tiles.
    """
    max_n = int(max_n_fraction * seq_len)
    tiles = [(s.record, int(start)) for s in spans
             for start in _acceptable_tiles(source.tokens(s.record), s, seq_len, max_n)]
    if not tiles or max_windows < 1:
        return []
    picks = np.unique(np.linspace(0, len(tiles) - 1, min(max_windows, len(tiles)))
                      .round().astype(np.int64))
    return [tiles[i] for i in picks]
