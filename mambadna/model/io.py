"""Saving and loading models: a folder in the Hugging Face layout, never pickle.

    config.json         ModelConfig fields + model_type, format_version, mambadna_version and
                        the sha256 of model.safetensors
    model.safetensors   the weights (the tied LM head is the embedding, stored once)
    labels.json         class names, in head order (classifiers only)
    README.md           a model card: sizes, parameter count, labels, training data if known

Files are written to a temporary folder next to the target and moved into place, so an
interrupted save never leaves a half-written file under a final name. Loading checks every file
and raises ModelFileError naming the file and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from mambadna._version import __version__
from mambadna.errors import ConfigError, ModelFileError
from mambadna.model.config import ModelConfig
from mambadna.model.network import MambaDNA

FORMAT_VERSION = 1
MODEL_TYPE = "mambadna"
CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE, CARD_FILE = (
    "config.json", "model.safetensors", "labels.json", "README.md")
_META_KEYS = ("model_type", "format_version", "mambadna_version", "weights_sha256",
              "training_info")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- save


def _resolve_labels(model: MambaDNA, labels: Sequence[str] | None) -> list[str] | None:
    num = model.config.num_labels
    labels = list(labels) if labels is not None else model.labels
    if num == 0:
        if labels:
            raise ConfigError(f"labels {labels[:3]}... given for a model without a "
                              f"classification head (num_labels = 0)")
        return None
    if labels is None:
        return [f"class_{i}" for i in range(num)]
    if len(labels) != num or len(set(labels)) != num:
        raise ConfigError(f"a classifier with num_labels={num} needs {num} distinct labels, "
                          f"got {labels}")
    return [str(label) for label in labels]


def _model_card(model: MambaDNA, labels, training_info) -> str:
    cfg = model.config
    lines = [
        "---", "library_name: mambadna", "tags: [dna, genomics, mamba, state-space-model]", "---",
        "", "# MambaDNA model", "",
        f"A Mamba-1 (selective state-space) model over DNA bases, saved by mambadna {__version__}."
        f" {model.num_parameters():,} parameters.", "",
        "| setting | value |", "|---|---|",
        *[f"| {key} | {value} |" for key, value in cfg.to_dict().items()], "",
    ]
    if labels:
        lines += ["## Labels", "", ", ".join(labels), ""]
    lines += ["## Training", ""]
    if training_info:
        lines += [f"- {key}: {value}" for key, value in training_info.items()]
    else:
        lines.append("Training data: not recorded.")
    lines += ["", "## Use", "", "```python", "import mambadna as md",
              'model = md.load_model("path/to/this/folder")',
              'vectors = model.embed(["ACGTACGT..."])', "```", ""]
    return "\n".join(lines)


def save_pretrained(model: MambaDNA, path: str | Path, labels: Sequence[str] | None = None,
                    training_info: dict | None = None) -> Path:
    """Write the model folder ``path`` (created; existing model files in it are replaced)."""
    from safetensors.torch import save_file

    path = Path(path)
    labels = _resolve_labels(model, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tensors = {name: t.detach().to("cpu", copy=True).contiguous()
                   for name, t in model.state_dict().items()}
        save_file(tensors, tmp / WEIGHTS_FILE,
                  metadata={"format": "pt", "mambadna_format_version": str(FORMAT_VERSION)})
        config = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
                  "mambadna_version": __version__,
                  "weights_sha256": file_sha256(tmp / WEIGHTS_FILE),
                  "training_info": training_info, **model.config.to_dict()}
        # default=str: training info may hold paths or dates; they are recorded as text.
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
        if labels is not None:
            (tmp / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(_model_card(model, labels, training_info))
        _move_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.labels = labels
    model.weights_sha256 = config["weights_sha256"]
    if training_info is not None:
        model.training_info = training_info
    return path


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished folder to ``path``, or move its files into an existing ``path``
    (weights first, config last: a reader sees either the old or the new config)."""
    if not path.exists():
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model folder is not
        os.replace(tmp, path)
        return
    if not path.is_dir():
        raise ModelFileError("exists and is not a folder", path=path,
                             fix="choose another output path for the model")
    for name in (WEIGHTS_FILE, LABELS_FILE, CARD_FILE, CONFIG_FILE):
        if (tmp / name).exists():
            os.replace(tmp / name, path / name)
        elif name == LABELS_FILE and (path / name).exists():
            (path / name).unlink()  # a stale label list of an earlier classifier


# ---------------------------------------------------------------------- load


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
    meta = {key: data.pop(key, None) for key in _META_KEYS}
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


def _read_labels(path: Path, num_labels: int) -> list[str] | None:
    file = path / LABELS_FILE
    if num_labels == 0:
        return None
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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> MambaDNA:
    """Load a folder written by ``save_pretrained``; returns the model in eval mode on
    ``device``, with ``model.labels`` set for classifiers."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError("model folder not found" if not path.exists() else
                             "is a file; a saved model is a folder", path=path,
                             fix="pass the folder holding config.json and model.safetensors")
    cfg, meta = _read_config(path)
    labels = _read_labels(path, cfg.num_labels)
    tensors = _read_weights(path, meta["weights_sha256"])
    model = MambaDNA(cfg)
    _load_state(model, tensors, path / WEIGHTS_FILE)
    model.labels = labels
    model.weights_sha256 = meta["weights_sha256"]
    model.training_info = meta["training_info"]
    return model.to(device).eval()
