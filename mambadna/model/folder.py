"""Reading a saved model folder (written by ``save_pretrained``, mambadna.model.save) into a
model class given by the caller: ``load_into(MambaDNA, folder)``. It does not import the
network, so the network's ``from_pretrained`` (ModelHubMixin) can use it; ``load_model`` in
mambadna.model.io is the public entry point.

Loading checks every file (config.json, model.safetensors with its sha256, labels.json) and
raises ModelFileError naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mambadna._version import __version__
from mambadna.errors import ConfigError, ModelFileError
from mambadna.model.config import ModelConfig
from mambadna.model.save import (
    CONFIG_FILE,
    FORMAT_VERSION,
    LABELS_FILE,
    META_KEYS,
    MODEL_TYPE,
    WEIGHTS_FILE,
    file_sha256,
)

if TYPE_CHECKING:  # annotations only: the network imports this module
    from mambadna.model.network import MambaDNA


def _read_config(path: Path) -> tuple[ModelConfig, dict]:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise ModelFileError(f"missing {CONFIG_FILE}: not a saved mambadna model", path=path,
                             fix="point to the folder written by save_pretrained (RUN_DIR/model)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"invalid JSON ({err})", path=file,
                             line=getattr(err, "lineno", None)) from None
    if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE:
        raise ModelFileError(f"not a mambadna model config (model_type "
                             f"{data.get('model_type') if isinstance(data, dict) else None!r})",
                             path=file)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"format_version {version!r} is not supported (this mambadna "
                             f"{__version__} reads version {FORMAT_VERSION})", path=file,
                             fix="load it with the mambadna version that saved it")
    meta = {key: data.pop(key, None) for key in META_KEYS}
    try:
        return ModelConfig.from_dict(data), meta
    except (ConfigError, TypeError) as err:
        message = err.message if isinstance(err, ConfigError) else str(err)
        raise ModelFileError(f"invalid model config: {message}", path=file,
                             fix=getattr(err, "fix", None)) from None


def _read_weights(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise ModelFileError(f"missing {WEIGHTS_FILE}", path=path,
                             fix="copy the whole model folder, or save the model again")
    if expected_sha256 is not None and file_sha256(file) != expected_sha256:
        raise ModelFileError(f"corrupt: its sha256 differs from the one recorded in "
                             f"{CONFIG_FILE} at save time", path=file,
                             fix="copy the file again from where the model was trained")
    try:
        return load_file(file)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ModelFileError(f"corrupt or not a safetensors file ({err})", path=file) from None


def _read_labels(path: Path, num_labels: int, id2label: object = None) -> list[str] | None:
    file = path / LABELS_FILE
    if num_labels == 0:
        return None
    if id2label is not None:
        labels = _labels_of(id2label, num_labels, path / CONFIG_FILE)
        if file.is_file() and _read_labels(path, num_labels) != labels:
            raise ModelFileError(f"id2label in {CONFIG_FILE} and {LABELS_FILE} name other "
                                 "classes", path=path,
                                 fix="save the model again, or make the two agree")
        return labels
    if not file.is_file():
        raise ModelFileError(f"missing {LABELS_FILE}: the config has a classifier with "
                             f"{num_labels} classes", path=path,
                             fix=f"copy {LABELS_FILE} with the model, or save the model again")
    try:
        labels = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"invalid JSON ({err})", path=file) from None
    if (not isinstance(labels, list) or len(labels) != num_labels
            or not all(isinstance(x, str) for x in labels) or len(set(labels)) != num_labels):
        raise ModelFileError(f"must be a JSON list of {num_labels} distinct strings "
                             f"(num_labels in {CONFIG_FILE}), got {labels!r}", path=file)
    return labels


def _load_state(model: MambaDNA, tensors: dict[str, torch.Tensor], file: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"weights do not match {CONFIG_FILE}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}", path=file)
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ModelFileError(f"tensor {name!r} has shape {tuple(tensor.shape)} but "
                                 f"{CONFIG_FILE} implies {tuple(expected[name].shape)}",
                                 path=file)
    model.load_state_dict(tensors, strict=True)


def _labels_of(id2label: object, num_labels: int, file: Path) -> list[str]:
    """id2label ({"0": "human", ...}, as Hugging Face writes it) as a list in head order."""
    wanted = [str(i) for i in range(num_labels)]
    if (not isinstance(id2label, dict) or sorted(id2label, key=str) != sorted(wanted)
            or not all(isinstance(v, str) for v in id2label.values())
            or len(set(id2label.values())) != num_labels):
        raise ModelFileError(f"id2label must map \"0\"..\"{num_labels - 1}\" to distinct "
                             f"class names (num_labels = {num_labels}), got {id2label!r}",
                             path=file)
    return [id2label[key] for key in wanted]


class UnverifiedModelWarning(UserWarning):
    """A model folder's config.json records no checksum of its weights: they load unverified."""


def check_weights_checksum(path: str | Path, meta: dict, *, strict: bool) -> None:
    """A folder without ``weights_sha256`` (hand-made, or edited) cannot be checked against
    corruption or tampering: refused when ``strict``, else loaded with a warning naming it."""
    if meta.get("weights_sha256") is not None:
        return
    what = (f"{CONFIG_FILE} records no weights_sha256, so {WEIGHTS_FILE} cannot be verified")
    fix = "save the model again with save_pretrained (it records the checksum)"
    if strict:
        raise ModelFileError(what + " (--strict refuses unverified models)", path=path, fix=fix)
    warnings.warn(f"{path}: {what}; loading it unverified. Fix: {fix}, or pass --strict to "
                  "refuse such folders", UnverifiedModelWarning, stacklevel=3)


def read_meta(path: Path) -> dict:
    """config.json's keys that are not ModelConfig fields (checksum, training info, ...)."""
    return _read_config(path)[1]


def load_into(cls: type[MambaDNA], path: Path, device: str | torch.device = "cpu", *,
              strict: bool = False) -> MambaDNA:
    """A ``cls`` (MambaDNA) with the weights and labels of the model folder ``path``, in eval
    mode on ``device``. strict: refuse a folder without ``weights_sha256``."""
    if not path.is_dir():
        raise ModelFileError("model folder not found" if not path.exists() else
                             "is a file; a saved model is a folder", path=path,
                             fix="pass the folder holding config.json and model.safetensors")
    cfg, meta = _read_config(path)
    check_weights_checksum(path, meta, strict=strict)
    labels = _read_labels(path, cfg.num_labels, meta["id2label"])
    tensors = _read_weights(path, meta["weights_sha256"])
    model = cls(cfg)
    _load_state(model, tensors, path / WEIGHTS_FILE)
    model.labels = labels
    model.weights_sha256 = meta["weights_sha256"]
    model.training_info = meta["training_info"]
    return model.to(device).eval()
