"""PyTorch datasets: a stream of whole training batches and fixed evaluation windows.

``BatchStream`` yields micro-batch ``m`` (m = 0, 1, 2, ...) as a pure function of
``(seed, rank, m)``: its windows are drawn with ``numpy.random.default_rng([seed, rank, m])``
and its shape follows the sequence-length schedule at optimizer step ``m // accumulate``. So:

- the stream is the same for any number of DataLoader workers (worker w of n makes batches
  m = start + w, start + w + n, ...; the DataLoader interleaves them back in order);
- resuming at optimizer step k only needs ``start = k * accumulate``;
- the batch size can change with the schedule without rebuilding workers (DataLoader is used
  with ``batch_size=None``; every item is a whole batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from mambadna.data.sampling import TokenSource, WindowSampler
from mambadna.data.schedule import SeqLenSchedule


class ExampleSource(Protocol):
    """Draws one training example: (uint8 tokens of shape (seq_len,), class index or -1)."""

    labeled: bool

    def example(self, rng: np.random.Generator, seq_len: int) -> tuple[np.ndarray, int]: ...

    def check(self, seq_len: int) -> None: ...


class LMExamples:
    """Unlabelled windows for next-base pretraining."""

    labeled = False

    def __init__(self, sampler: WindowSampler) -> None:
        self.sampler = sampler

    def example(self, rng: np.random.Generator, seq_len: int) -> tuple[np.ndarray, int]:
        return self.sampler.sample(rng, seq_len), -1

    def check(self, seq_len: int) -> None:
        self.sampler.check(seq_len)


class SpeciesExamples:
    """Labelled windows: a class chosen uniformly, then a window of that class's sequences.

    ``samplers[k]`` draws windows of class k (its records with probability proportional to
    length, as in the Mamba paper's Great Apes task).
    """

    labeled = True

    def __init__(self, samplers: Sequence[WindowSampler]) -> None:
        self.samplers = list(samplers)

    def example(self, rng: np.random.Generator, seq_len: int) -> tuple[np.ndarray, int]:
        label = int(rng.integers(len(self.samplers)))
        return self.samplers[label].sample(rng, seq_len), label

    def check(self, seq_len: int) -> None:
        for sampler in self.samplers:
            sampler.check(seq_len)


def make_batch(examples: ExampleSource, seed: int, rank: int, micro: int, seq_len: int,
               batch_size: int) -> dict[str, torch.Tensor]:
    """Micro-batch ``micro``: tokens uint8 (batch, seq_len) [+ labels int64 (batch,)]."""
    rng = np.random.default_rng([seed, rank, micro])
    tokens = np.empty((batch_size, seq_len), dtype=np.uint8)
    labels = np.empty(batch_size, dtype=np.int64)
    for b in range(batch_size):
        tokens[b], labels[b] = examples.example(rng, seq_len)
    batch = {"tokens": torch.from_numpy(tokens)}
    if examples.labeled:
        batch["labels"] = torch.from_numpy(labels)
    return batch


class BatchStream(IterableDataset):
    """Endless stream of whole micro-batches following a SeqLenSchedule (see module doc).

    start: first micro-batch index (optimizer step * accumulate when resuming).
    stop: index after the last micro-batch, or None for an endless stream.
    """

    def __init__(self, examples: ExampleSource, schedule: SeqLenSchedule, *, seed: int,
                 accumulate: int = 1, rank: int = 0, start: int = 0,
                 stop: int | None = None) -> None:
        super().__init__()
        self.examples = examples
        self.schedule = schedule
        self.seed = int(seed)
        self.accumulate = int(accumulate)
        self.rank = int(rank)
        self.start = int(start)
        self.stop = stop

    def batch(self, micro: int) -> dict[str, torch.Tensor]:
        stage = self.schedule.stage_at(micro // self.accumulate)
        return make_batch(self.examples, self.seed, self.rank, micro, stage.seq_len,
                          stage.batch_size)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        micro = self.start + worker
        while self.stop is None or micro < self.stop:
            yield self.batch(micro)
            micro += workers


class WindowDataset(Dataset):
    """Fixed windows ``(record, start)`` of ``seq_len`` bases for evaluation (forward strand).

    Items: {"tokens": uint8 (seq_len,)[, "labels": int64 scalar]}; ``labels`` (one per window)
    is given for classification.
    """

    def __init__(self, source: TokenSource, windows: Sequence[tuple[int, int]], seq_len: int,
                 labels: Sequence[int] | None = None) -> None:
        self.source = source
        self.windows = list(windows)
        self.seq_len = int(seq_len)
        self.labels = list(labels) if labels is not None else None
        if self.labels is not None and len(self.labels) != len(self.windows):
            raise ValueError("one label per window is needed")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record, start = self.windows[i]
        tokens = np.array(self.source.tokens(record)[start:start + self.seq_len])
        item = {"tokens": torch.from_numpy(tokens)}
        if self.labels is not None:
            item["labels"] = torch.tensor(self.labels[i], dtype=torch.int64)
        return item
