"""Saving a model: a folder in the Hugging Face layout, never pickle.

    config.json         ModelConfig fields + model_type, format_version, mambadna_version,
                        the sha256 of model.safetensors, and (classifiers) id2label / label2id
                        as Hugging Face tools read them
    model.safetensors   the weights (the tied LM head is the embedding, stored once)
    labels.json         class names, in head order (classifiers only)
    README.md           a model card: sizes, parameter count, labels, training data if known

Files are written to a temporary folder next to the target and moved into place
(mambadna.atomic), so an interrupted save never leaves a half-written file under a final name.
Loading is in mambadna.model.io. This module does not import the network (it is called by
``MambaDNA.save_pretrained``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mambadna._version import __version__
from mambadna.atomic import atomic_directory
from mambadna.errors import ConfigError, ModelFileError

if TYPE_CHECKING:  # for annotations only: the network imports this module
    from mambadna.model.network import MambaDNA

FORMAT_VERSION = 1
MODEL_TYPE = "mambadna"
CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE, CARD_FILE = (
    "config.json", "model.safetensors", "labels.json", "README.md")
META_KEYS = ("model_type", "format_version", "mambadna_version", "weights_sha256",
             "training_info", "id2label", "label2id")
"""config.json keys that are not ModelConfig fields."""
MERGE_ORDER = (WEIGHTS_FILE, LABELS_FILE, CARD_FILE, CONFIG_FILE)
"""Into an existing folder: weights first, config last (a reader sees the old or the new
config, and the config's sha256 names the weights it belongs with)."""


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
              'model = md.load_model("path/to/this/folder")  # or "user/name" on the Hub',
              'vectors = model.embed(["ACGTACGT..."])', "```", ""]
    return "\n".join(lines)


def _check_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ModelFileError("exists and is not a folder", path=path,
                             fix="choose another output path for the model")


def save_pretrained(model: MambaDNA, path: str | Path, labels: Sequence[str] | None = None,
                    training_info: dict | None = None) -> Path:
    """Write the model folder ``path`` (created; existing model files in it are replaced, weights
    first and config last, so a reader sees either the old or the new config; other files in
    the folder are left alone)."""
    from safetensors.torch import save_file

    path = Path(path)
    labels = _resolve_labels(model, labels)
    with atomic_directory(path, check=_check_folder, merge=MERGE_ORDER) as tmp:
        tensors = {name: t.detach().to("cpu", copy=True).contiguous()
                   for name, t in model.state_dict().items()}
        save_file(tensors, tmp / WEIGHTS_FILE,
                  metadata={"format": "pt", "mambadna_format_version": str(FORMAT_VERSION)})
        config = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
                  "mambadna_version": __version__,
                  "weights_sha256": file_sha256(tmp / WEIGHTS_FILE),
                  "training_info": training_info, **model.config.to_dict()}
        if labels is not None:
            config["id2label"] = {str(i): label for i, label in enumerate(labels)}
            config["label2id"] = {label: i for i, label in enumerate(labels)}
        # default=str: training info may hold paths or dates; they are recorded as text.
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
        if labels is not None:
            (tmp / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(_model_card(model, labels, training_info))
    model.labels = labels
    model.weights_sha256 = config["weights_sha256"]
    if training_info is not None:
        model.training_info = training_info
    return path
