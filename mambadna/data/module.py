"""LightningDataModule over a BatchStream (training) and a WindowDataset (validation).

The training stream starts at micro-batch ``trainer.global_step * accumulate`` on the process's
global rank. Lightning restores the step from ``last.ckpt`` before it asks for the training
DataLoader, so a resumed run continues with exactly the batches an uninterrupted run would have
seen next; nothing else of the data pipeline needs saving.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Subset

from mambadna.data.datasets import BatchStream, ExampleSource, WindowDataset
from mambadna.data.schedule import SeqLenSchedule


class WindowDataModule(pl.LightningDataModule):
    """Training batches follow ``schedule`` (length and batch size per optimizer step).

    examples: draws training windows (LMExamples or SpeciesExamples).
    val: fixed validation windows, or None for no validation.
    val_batch_size: windows per validation batch (default: the schedule's final batch size).
    num_workers: DataLoader worker processes for training batches (0: in the main process).
    context_parallel: processes that split each window along its length; the consecutive
    global ranks of one such group get the same batches (the model takes each one's segment).
    """

    def __init__(self, examples: ExampleSource, schedule: SeqLenSchedule, *, seed: int,
                 accumulate: int = 1, val: WindowDataset | None = None,
                 val_batch_size: int | None = None, num_workers: int = 0,
                 context_parallel: int = 1) -> None:
        super().__init__()
        self.examples = examples
        self.schedule = schedule
        self.seed = seed
        self.accumulate = accumulate
        self.val = val
        self.val_batch_size = val_batch_size or schedule.batch_size
        self.num_workers = num_workers
        self.context_parallel = context_parallel

    def _replica(self) -> tuple[int, int]:
        """(data-parallel replica of this process, number of replicas)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        cp = self.context_parallel
        return trainer.global_rank // cp, max(1, trainer.world_size // cp)

    def _position(self) -> tuple[int, int]:
        """(first micro-batch index, replica) of this process's training stream."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return trainer.global_step * self.accumulate, self._replica()[0]

    def train_dataset(self) -> BatchStream:
        start, rank = self._position()
        return BatchStream(self.examples, self.schedule, seed=self.seed,
                           accumulate=self.accumulate, rank=rank, start=start)

    def train_dataloader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(self.train_dataset(), batch_size=None, num_workers=workers,
                          pin_memory=torch.cuda.is_available(),
                          prefetch_factor=2 if workers else None)

    def val_dataloader(self) -> DataLoader | list:
        """Every validation window once over all replicas (replica r takes windows r,
        r + replicas, ...; no padding duplicates, so summed metrics are exact)."""
        if self.val is None or len(self.val) == 0:
            return []
        data = self.val
        rank, world = self._replica()
        if world > 1:
            # Fewer windows than ranks: every rank still needs a batch for the collective
            # reduction at the end of validation, so the last ranks repeat a window.
            shard = range(rank, len(data), world) if len(data) >= world else [rank % len(data)]
            data = Subset(data, shard)
        return DataLoader(data, batch_size=self.val_batch_size, shuffle=False,
                          num_workers=0, pin_memory=torch.cuda.is_available())
