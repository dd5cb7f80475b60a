"""Loading a saved model folder (written by ``save_pretrained``, mambadna.model.save), or a
model on the Hugging Face Hub by its id (mambadna.model.hub).

Loading checks every file (config.json, model.safetensors with its sha256, labels.json) and
raises ModelFileError naming the file and what is wrong with it (mambadna.model.folder).
``save_pretrained`` is re-exported here: ``mambadna.model.io`` is the model folder's reading
and writing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mambadna.model.folder import (
    UnverifiedModelWarning,
    check_weights_checksum,
    load_into,
    read_meta,
)
from mambadna.model.hub import model_folder
from mambadna.model.memory import check_device_fits
from mambadna.model.network import MambaDNA
from mambadna.model.save import file_sha256, save_pretrained

__all__ = ["UnverifiedModelWarning", "file_sha256", "load_model", "require_verified",
           "save_pretrained"]


def require_verified(path: str | Path, revision: str | None = None) -> None:
    """Raise ModelFileError unless the model folder's config records its weights' sha256 (the
    CLI's ``--strict``, checked before any input is read). ``path`` may be a hub id."""
    path = model_folder(path, revision)
    if not path.is_dir():
        load_model(path)  # raises the usual "not found" / "is a file" error
    check_weights_checksum(path, read_meta(path), strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu", *,
               strict: bool = False, revision: str | None = None) -> MambaDNA:
    """Load a folder written by ``save_pretrained``, or a model on the Hugging Face Hub by its
    id (``user/name``, ``user/name@revision``, or ``revision=``: see mambadna.model.hub);
    returns the model in eval mode on ``device``, with ``model.labels`` set for classifiers.

    strict: refuse a folder whose config.json records no ``weights_sha256`` (without it the
    weights load with an UnverifiedModelWarning).
    """
    model = load_into(MambaDNA, model_folder(path, revision), "cpu", strict=strict)
    check_device_fits(model.config, device, tokens=0, training=False)  # before moving there
    return model.to(device)
