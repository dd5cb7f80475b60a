"""Finetuning a species classifier from a manifest: it learns, exports a loadable classifier,
keeps the pretrained backbone, and refuses bad manifests before training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mambadna.alphabet import encode
from mambadna.errors import ConfigError, InputFileError
from mambadna.model import MambaDNA, ModelConfig, load_model
from mambadna.train import FinetuneConfig, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECIES = {"low_gc": 0.25, "mid_gc": 0.5, "high_gc": 0.75}


def markov_genome(rng: np.random.Generator, n: int, gc: float) -> str:
    """Order-1 Markov DNA with GC content ``gc`` and a preference for repeating the last base
    (species differ in composition, as the three simulated species of the task)."""
    probs = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    out = np.empty(n, dtype=np.int64)
    out[0] = rng.choice(4, p=probs)
    for i in range(1, n):
        p = probs.copy()
        p[out[i - 1]] += 0.2
        out[i] = rng.choice(4, p=p / p.sum())
    return "".join("ACGT"[b] for b in out)


@pytest.fixture(scope="module")
def species(tmp_path_factory):
    """Three species, each with train (2 chromosomes), val and test files, and manifest.tsv."""
    folder = tmp_path_factory.mktemp("species")
    rng = np.random.default_rng(42)
    rows = ["path\tlabel\tsplit"]
    for label, gc in SPECIES.items():
        chroms = {"train": ["chr1", "chr2"], "val": ["chr3"], "test": ["chr4"]}
        for split, names in chroms.items():
            text = "".join(f">{name}\n{markov_genome(rng, 4000, gc)}\n" for name in names)
            (folder / f"{label}.{split}.fa").write_text(text)
            rows.append(f"{label}.{split}.fa\t{label}\t{split}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("pre") / "model"
    MambaDNA(ModelConfig.from_preset("tiny", n_layer=2)).save_pretrained(path)
    return path


def config(species, out, **kw) -> FinetuneConfig:
    base = dict(manifest=str(species / "manifest.tsv"), out_dir=str(out), seq_len=64,
                batch_size=8, max_steps=100, val_every=50, val_windows=16, lr=5e-3,
                log_every=10, num_workers=0, seed=0)
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.slow  # ~8 s: 100 training steps
def test_finetuned_classifier_beats_chance_on_held_out_chromosomes(species, pretrained,
                                                                  tmp_path):
    run = finetune(config(species, tmp_path / "run", from_model=str(pretrained)))
    assert run.final["val_acc"] > 0.7, run.final  # chance is 1/3
    assert run.final["val_macro_f1"] > 0.6
    confusion = pd.read_csv(tmp_path / "run" / "confusion_matrix.csv", index_col=0)
    assert list(confusion.index) == list(SPECIES) and confusion.to_numpy().sum() == 48

    model = load_model(run.model_dir)
    assert model.labels == list(SPECIES) and model.config.num_labels == 3
    assert not model.config.gradient_checkpointing
    card = json.loads((run.model_dir / "config.json").read_text())["training_info"]
    assert card["task"] == "sequence classification" and card["from_model"] == str(pretrained)
    correct = total = 0
    for k, label in enumerate(SPECIES):  # test chromosomes: never seen in training
        text = (species / f"{label}.test.fa").read_text().split("\n")[1]
        windows = np.stack([encode(text[i:i + 64]) for i in range(0, 4000 - 64, 64)])
        with torch.no_grad():
            predicted = model.classify_logits(torch.from_numpy(windows).long()).argmax(-1)
        correct += int((predicted == k).sum())
        total += len(windows)
    assert correct / total > 0.7
    assert (run.best_model_dir / "labels.json").is_file()


def test_the_classifier_keeps_the_pretrained_backbone(species, pretrained):
    from mambadna.train.run import _classifier

    base = load_model(pretrained)
    model = _classifier(config(species, "unused", from_model=str(pretrained), pooling="mean"),
                        ["a", "b"])
    assert model.config.pooling == "mean" and model.classifier.out_features == 2
    for name, tensor in base.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_manifest_problems_stop_before_training(species, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text(f"path\tlabel\tsplit\n{species}/low_gc.train.fa\tlow\ttrain\n"
                   f"{species}/nowhere.fa\thigh\ttrain\n")
    with pytest.raises(InputFileError, match=r"bad\.tsv:3: .*nowhere\.fa"):
        finetune(config(species, tmp_path / "run", manifest=str(bad), preset="tiny"))
    with pytest.raises(ConfigError, match=r"long enough for a window of 5000"):
        finetune(config(species, tmp_path / "run", preset="tiny", seq_len=5000))
    with pytest.raises(ConfigError, match=r"label 'mid_gc' has no validation sequence"):
        _short_val(species, tmp_path)
    with pytest.raises(ConfigError, match="class weights given for unknown label"):
        finetune(config(species, tmp_path / "run", preset="tiny",
                        class_weights={"gorilla": 2.0}))
    with pytest.raises(ConfigError, match="--from: no model folder"):
        finetune(config(species, tmp_path / "run", from_model=str(tmp_path / "nope")))
    assert not (tmp_path / "run").exists()


def _short_val(species, tmp_path):
    """A label whose only val file is shorter than the window."""
    (tmp_path / "short.fa").write_text(">chr3\n" + "ACGT" * 10 + "\n")
    rows = (species / "manifest.tsv").read_text().replace(
        "mid_gc.val.fa", str(tmp_path / "short.fa"))
    rows = rows.replace("low_gc.", f"{species}/low_gc.").replace("high_gc.",
                                                                 f"{species}/high_gc.")
    rows = rows.replace("mid_gc.", f"{species}/mid_gc.")
    (tmp_path / "m.tsv").write_text(rows)
    finetune(config(species, tmp_path / "run", manifest=str(tmp_path / "m.tsv"),
                    preset="tiny"))


def test_strict_refuses_an_unverified_pretrained_model(species, pretrained, tmp_path):
    import json
    import shutil

    from mambadna.errors import ModelFileError
    from mambadna.model.io import UnverifiedModelWarning
    from mambadna.train.run import _classifier

    folder = tmp_path / "unverified"
    shutil.copytree(pretrained, folder)
    card = json.loads((folder / "config.json").read_text())
    card["weights_sha256"] = None
    (folder / "config.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="--strict"):
        _classifier(config(species, "unused", from_model=str(folder), strict=True), ["a", "b"])
    with pytest.warns(UnverifiedModelWarning):
        _classifier(config(species, "unused", from_model=str(folder)), ["a", "b"])
