"""Batched window inference shared by classify and embed, with or without a carried state.

A ``WindowRunner`` walks records window by window (``WindowSpec``), runs the model on batches
of windows and turns each window's hidden states into one row of values with a *reducer*
(pooled embedding, class log-probabilities). It yields ``Rows`` in input order, then by start.

- Window mode: every window is an independent sequence (zero state at its first base). Windows
  of consecutive records share batches, and short windows (short records, last pieces) are
  packed: a batch holds up to ``batch_size`` full windows' worth of padded bases, so many
  short reads run in few passes. A short window is padded right with PAD and its values are
  computed over its real positions only (the model reads each row's real length), so a
  window's values do not depend on what it is batched with. A worker thread reads and
  batches the next windows (into pinned memory on CUDA) while the model runs.
- Stream mode: each record is one sequence; the recurrent state after a window is the state at
  the next window's first base, so a window's values see the whole record before it. Several
  records stream side by side in the lanes of a batch; a lane that finishes its record takes
  the next one with a zero state. Memory is one window per lane plus the state, whatever the
  record length. Rows of records that finish before an earlier record are held back (at most
  ``MAX_HELD_ROWS``; beyond that idle lanes wait) so output stays in input order.

With a ``ContextGroup`` (``--context-parallel``), every rank of the group runs the same windows,
each its segment of them; the hidden states are gathered on every rank for the reducer, and
in stream mode the last rank's end state is what the next window starts from (rank 0's).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from mambadna.alphabet import PAD, N, reverse_complement
from mambadna.errors import ConfigError
from mambadna.model import (
    ContextGroup,
    MambaDNA,
    broadcast_from,
    gather_segments,
    load_model,
)
from mambadna.model.io import require_verified as require_verified  # for the CLI's --strict
from mambadna.model.state import ModelState
from mambadna.pipelines.sources import SourceRecord
from mambadna.pipelines.tiling import WindowSpec

MAX_HELD_ROWS = 1 << 16
"""Stream mode: rows of later records held while an earlier record still runs."""

PREFETCH = 2
"""Window mode: batches read and padded ahead of the model by the worker thread."""

Item = TypeVar("Item")

Reducer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(hidden (b, L, d_model), tokens (b, L) int64, lengths (b,)) -> values (b, k) fp32."""


def background(items: Iterable[Item], depth: int = PREFETCH) -> Iterator[Item]:
    """Yield ``items``, produced by a worker thread up to ``depth`` ahead of the consumer; an
    exception in the worker is raised here; closing the generator stops the worker."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as err:  # handed to the consumer, raised there
            put((None, err))

    worker = threading.Thread(target=work, name="mambadna-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = buffer.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto": CUDA if available, else CPU. Asking for a missing GPU is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index or 0) >= count:
            raise ConfigError(f"device {device} asked for, but {count} CUDA device(s) are "
                              f"available", fix="use --device cpu, or run on a GPU machine")
    return device


def prepare_model(model_or_dir: MambaDNA | str | os.PathLike,
                  device: torch.device) -> MambaDNA:
    """A model on ``device``: loaded from a saved folder, or the given model moved there."""
    if isinstance(model_or_dir, MambaDNA):
        return model_or_dir.to(device)
    if isinstance(model_or_dir, (str, os.PathLike)):
        return load_model(model_or_dir, device=device)
    raise TypeError(f"model must be a MambaDNA or the path of a saved model folder, got "
                    f"{type(model_or_dir).__name__}")


def trained_length(model: MambaDNA) -> int | None:
    """The sequence length the model was trained on, if its training info says."""
    value = (model.training_info or {}).get("seq_len")
    return int(value) if isinstance(value, (int, np.integer)) and value > 0 else None


@dataclass
class Rows:
    """Results of some windows. record_index, start, end: (n,) int64; n_fraction: (n,)
    float32 (share of N among the window's bases); values: (n, k) float32."""

    records: list[str]
    record_index: np.ndarray
    start: np.ndarray
    end: np.ndarray
    n_fraction: np.ndarray
    values: np.ndarray
    sources: list[str] | None = None
    """The input file of each row (None: not known)."""
    regions: list[str | None] | None = None
    """The region asked for that each row's record comes from (None: no regions)."""

    def __post_init__(self) -> None:
        if self.sources is None:
            self.sources = [""] * len(self.records)
        if self.regions is None:
            self.regions = [None] * len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        return cls(records=[name for p in parts for name in p.records],
                   **{f: np.concatenate([getattr(p, f) for p in parts])
                      for f in ("record_index", "start", "end", "n_fraction", "values")},
                   sources=[s for p in parts for s in p.sources],
                   regions=[r for p in parts for r in p.regions])

    @classmethod
    def empty(cls, k: int) -> Rows:
        none = np.zeros(0, dtype=np.int64)
        return cls([], none, none, none, np.zeros(0, np.float32), np.zeros((0, k), np.float32))

    def take(self, rows: np.ndarray | slice) -> Rows:
        index = np.arange(len(self))[rows]
        return Rows([self.records[i] for i in index], self.record_index[rows], self.start[rows],
                    self.end[rows], self.n_fraction[rows], self.values[rows],
                    [self.sources[i] for i in index], [self.regions[i] for i in index])


@dataclass
class _Window:
    record: SourceRecord
    start: int
    end: int
    tokens: np.ndarray  # (end - start,) uint8


class WindowRunner:
    """Runs ``model`` over the windows of records and reduces each window to a row of values.

    batch_size: windows per forward pass (stream mode: records side by side).
    rc_average: also run each window's reverse complement and average the two rows of values
        (not with stream mode: the reverse strand would stream from the record's end).
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32".
    on_record: called with (record, n_windows) when a record is reached, even with 0 windows.
    layers, append_cls: passed to ``MambaDNA.hidden_states`` (which blocks; a CLS token
        after each window, not with stream mode).
    context: the ranks that split every window along its length (None: all of it here).
    An RC-equivariant model's values are the same on both strands already: ``rc_average``
    adds nothing there and is skipped.
    """

    def __init__(self, model: MambaDNA, reducer: Reducer, spec: WindowSpec, *,
                 batch_size: int = 8, rc_average: bool = False, precision: str = "auto",
                 progress: tqdm | None = None,
                 on_record: Callable[[SourceRecord, int], None] | None = None,
                 layers: list[int] | None = None, append_cls: bool = False,
                 context: ContextGroup | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        if spec.stream and rc_average:
            raise ConfigError("--rc-average cannot be combined with --stream: the reverse "
                              "strand would have to stream from each record's end",
                              fix="drop one of the two options")
        if spec.stream and (model.config.bidirectional or model.config.rc_equivariant):
            kind = "bidirectional" if model.config.bidirectional else "RC-equivariant"
            raise ConfigError(f"--stream needs a unidirectional model; this one is {kind}",
                              fix="run without --stream")
        if spec.stream and append_cls:
            raise ConfigError("--pool cls appends a CLS token after each window, which a "
                              "carried state cannot hold", fix="use --pool last with --stream")
        if precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16 or fp32, got {precision!r}")
        self.model = model
        self.reducer = reducer
        self.spec = spec
        self.batch_size = batch_size
        self.rc_average = rc_average and not model.config.rc_equivariant
        self.hidden_options = {"layers": layers, "append_cls": append_cls}
        self.bf16 = precision == "bf16" or (precision == "auto" and model.device.type == "cuda")
        self.progress = progress
        self.on_record = on_record
        self.context = context if context is not None and context.size > 1 else None

    def run(self, records: Iterable[SourceRecord]) -> Iterator[Rows]:
        """Rows of every window, in input order then start (see the module docstring)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield from (self._stream(records) if self.spec.stream
                            else self._independent(records))
        finally:
            self.model.train(was_training)

    # ---------------------------------------------------------------- shared forward pass

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16)

    def _padded(self, arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded tokens (b, max length) uint8 and lengths (b,) on the CPU (pinned when
        the model is on CUDA, so the copy to it is asynchronous)."""
        lengths = [len(a) for a in arrays]
        tokens = np.full((len(arrays), max(lengths)), PAD, dtype=np.uint8)
        for row, array in enumerate(arrays):
            tokens[row, :len(array)] = array
        tokens, lengths = torch.from_numpy(tokens), torch.tensor(lengths)
        if self.model.device.type == "cuda":
            tokens, lengths = tokens.pin_memory(), lengths.pin_memory()
        return tokens, lengths

    def _strands(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return arrays + [reverse_complement(a) for a in arrays] if self.rc_average else arrays

    def _values(self, arrays: list[np.ndarray], state=None, padded=None):
        """Reduced values (b, k) fp32 on the CPU [and the new state when ``state`` is given].
        padded: ``_padded(_strands(arrays))`` made ahead (window mode)."""
        tokens, lengths = padded if padded is not None else self._padded(self._strands(arrays))
        device = self.model.device
        # uint8 over the bus (8x less than int64), widened on the device.
        tokens = tokens.to(device, non_blocking=True).long()
        lengths = lengths.to(device, non_blocking=True)
        with self._autocast():
            if self.context is not None:
                hidden, new_state = self._split_hidden(tokens, state)
            elif state is None:
                hidden = self.model.hidden_states(tokens, lengths=lengths,
                                                  **self.hidden_options)
                new_state = None
            else:
                hidden, new_state = self.model.hidden_states(
                    tokens, state=state, return_state=True,
                    layers=self.hidden_options["layers"])
            values = self.reducer(hidden, tokens, lengths).float()
        if self.rc_average:
            half = values.shape[0] // 2
            values = (values[:half] + values[half:]) / 2
        return values.cpu().numpy(), new_state

    def _split_hidden(self, tokens: torch.Tensor, state):
        """The hidden states of the whole windows, each rank computing its segment [and the
        state after the windows: the last rank's, on every rank]."""
        context = self.context
        start, stop = context.bounds(tokens.shape[1])
        part = tokens[:, start:stop]
        new_state = None
        layers = self.hidden_options["layers"]
        if state is None:
            hidden = self.model.hidden_states(part, context=context, **self.hidden_options)
        else:
            hidden, new_state = self.model.hidden_states(
                part, state=state if context.first else None, return_state=True,
                context=context, layers=layers)
            last = context.size - 1
            new_state = ModelState([broadcast_from(c, context, last) for c in new_state.conv],
                                   [broadcast_from(s, context, last) for s in new_state.ssm])
        return gather_segments(hidden, context, tokens.shape[1]), new_state

    def _rows(self, windows: list[_Window], values: np.ndarray) -> Rows:
        if self.progress is not None:
            self.progress.set_postfix_str(windows[-1].record.name, refresh=False)
            self.progress.update(sum(w.end - w.start for w in windows))
        return Rows(
            records=[w.record.name for w in windows],
            record_index=np.array([w.record.index for w in windows], dtype=np.int64),
            # in the record's sequence: a region's record starts at its offset
            start=np.array([w.record.offset + w.start for w in windows], dtype=np.int64),
            end=np.array([w.record.offset + w.end for w in windows], dtype=np.int64),
            n_fraction=np.array([np.count_nonzero(w.tokens == N) / len(w.tokens)
                                 for w in windows], dtype=np.float32),
            values=values, sources=[w.record.source for w in windows],
            regions=[w.record.region for w in windows])

    # ---------------------------------------------------------------- window mode

    def _independent(self, records: Iterable[SourceRecord]) -> Iterator[Rows]:
        for windows, padded in background(self._window_batches(records)):
            yield self._rows(windows, self._values([w.tokens for w in windows],
                                                   padded=padded)[0])

    def _window_batches(self, records: Iterable[SourceRecord]):
        """(windows, padded tokens) of each batch, in input order (run by the worker)."""
        budget = self.batch_size * self.spec.window  # padded bases of a batch of full windows
        pending: list[_Window] = []
        longest = 0
        for record in records:
            count = self.spec.count(record.length)
            if self.on_record is not None:
                self.on_record(record, count)
            for i in range(count):
                start, end = self.spec.span(record.length, i)
                if pending and (len(pending) + 1) * max(longest, end - start) > budget:
                    yield pending, self._padded(self._strands([w.tokens for w in pending]))
                    pending, longest = [], 0
                pending.append(_Window(record, start, end, record.tokens(start, end)))
                longest = max(longest, end - start)
        if pending:
            yield pending, self._padded(self._strands([w.tokens for w in pending]))

    # ---------------------------------------------------------------- stream mode

    def _stream(self, records: Iterable[SourceRecord]) -> Iterator[Rows]:
        source = iter(records)
        lanes: list[_Lane | None] = [None] * self.batch_size
        state = self.model.allocate_state(self.batch_size)
        order = _InOrder()
        more = True
        while True:
            if more and order.held < MAX_HELD_ROWS:
                more = self._fill(lanes, source, state, order)
            active = [i for i, lane in enumerate(lanes) if lane is not None]
            if not active:
                if more:
                    continue  # only zero-window records were read; read on
                break
            windows = [lanes[i].next_window() for i in active]
            rows = torch.tensor(active, device=self.model.device)
            sub = state if len(active) == self.batch_size else state.select(rows)
            values, new = self._values([w.tokens for w in windows], state=sub)
            for layer in range(state.n_layer):  # write the lanes' new state back in place
                state.conv[layer][rows] = new.conv[layer].float()
                state.ssm[layer][rows] = new.ssm[layer].float()
            step = self._rows(windows, values)
            for k, i in enumerate(active):
                order.add(lanes[i].record.index, step.take(slice(k, k + 1)))
                if lanes[i].done:
                    order.finish(lanes[i].record.index)
                    lanes[i] = None
            yield from order.flush()
        yield from order.flush()

    def _fill(self, lanes, source: Iterator[SourceRecord], state, order: _InOrder) -> bool:
        """Give idle lanes the next records (zero state); False once the input is exhausted."""
        for i, lane in enumerate(lanes):
            while lane is None:
                record = next(source, None)
                if record is None:
                    return False
                count = self.spec.count(record.length)
                if self.on_record is not None:
                    self.on_record(record, count)
                order.open(record.index)
                if count == 0:
                    order.finish(record.index)
                    continue
                lane = lanes[i] = _Lane(record, self.spec, count)
                for layer in range(state.n_layer):
                    state.conv[layer][i] = 0
                    state.ssm[layer][i] = 0
        return True


class _Lane:
    """One record streaming through one row of the batch (O(1) memory in its length)."""

    def __init__(self, record: SourceRecord, spec: WindowSpec, count: int) -> None:
        self.record = record
        self.spec = spec
        self.count = count
        self.next = 0

    @property
    def done(self) -> bool:
        return self.next == self.count

    def next_window(self) -> _Window:
        start, end = self.spec.span(self.record.length, self.next)
        self.next += 1
        return _Window(self.record, start, end, self.record.tokens(start, end))


class _InOrder:
    """Releases rows in the order records were opened; the first open record streams out."""

    def __init__(self) -> None:
        self.queue: deque[list] = deque()  # [record index, rows parts, finished]
        self.by_index: dict[int, list] = {}
        self.held = 0

    def open(self, index: int) -> None:
        entry = [index, [], False]
        self.queue.append(entry)
        self.by_index[index] = entry

    def add(self, index: int, rows: Rows) -> None:
        self.by_index[index][1].append(rows)
        self.held += len(rows)

    def finish(self, index: int) -> None:
        self.by_index[index][2] = True

    def flush(self) -> Iterator[Rows]:
        while self.queue:
            index, parts, finished = self.queue[0]
            if parts:
                self.held -= sum(len(p) for p in parts)
                yield Rows.concat(parts)
                parts.clear()
            if not finished:
                return
            self.queue.popleft()
            del self.by_index[index]
