"""Training data: token stores, held-out splits, window samplers, datasets, a DataModule.

Imported lazily, so ``mambadna.data.store`` (torch-free, used by ``mambadna tokenize``) does not
pull in torch and Lightning::

    from mambadna.data import TokenSource, holdout_split, WindowSampler, SeqLenSchedule
    from mambadna.data import BatchStream, WindowDataset, WindowDataModule   # torch
"""

from __future__ import annotations

from mambadna._modules import lazy_exports

_LAZY = {
    "TokenStore": "mambadna.data.store",
    "write_token_store": "mambadna.data.store",
    "TokenSource": "mambadna.data.sampling",
    "Span": "mambadna.data.sampling",
    "Split": "mambadna.data.sampling",
    "holdout_split": "mambadna.data.sampling",
    "WindowSampler": "mambadna.data.sampling",
    "tile_windows": "mambadna.data.sampling",
    "SeqLenSchedule": "mambadna.data.schedule",
    "Stage": "mambadna.data.schedule",
    "ManifestRow": "mambadna.manifests.labelled",
    "read_manifest": "mambadna.manifests.labelled",
    "PretrainData": "mambadna.data.prepare",
    "SpeciesData": "mambadna.data.prepare",
    "pretrain_data": "mambadna.data.prepare",
    "species_data": "mambadna.data.prepare",
    "tokenized": "mambadna.data.prepare",
    "LMExamples": "mambadna.data.datasets",
    "SpeciesExamples": "mambadna.data.datasets",
    "BatchStream": "mambadna.data.datasets",
    "WindowDataset": "mambadna.data.datasets",
    "WindowDataModule": "mambadna.data.module",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
