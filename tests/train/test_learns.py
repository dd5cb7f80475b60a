"""The models learn: a batch is memorised, and trivially separable tasks are learnt from scratch.

These are the checks behind "does the recipe work": if a model cannot overfit one batch or
separate two labels by GC content or by a planted motif, no accuracy on a real task means
anything. Classification runs through the public finetune -> evaluate path, with the finetune
defaults (mean pooling, class-balanced windows, AdamW with warmup and cosine decay).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mambadna.model import MambaDNA, ModelConfig
from mambadna.pipelines.evaluate import evaluate
from mambadna.train import FinetuneConfig, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MOTIF = "GATTACAGGCTA"


def test_a_model_memorises_one_batch():
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig(d_model=16, n_layer=2, num_labels=2, pooling="mean"))
    tokens = torch.randint(5, 9, (8, 64))
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model.classify_logits(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = model.classify_logits(tokens)
    assert float(F.cross_entropy(logits, labels)) < 0.05
    assert (logits.argmax(-1) == labels).all()


def _sequence(rng: np.random.Generator, n: int, gc: float, motif_every: int = 0) -> str:
    p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    bases = rng.choice(np.array(list("ACGT")), size=n, p=p)
    if motif_every:
        for start in range(rng.integers(motif_every), n - len(MOTIF), motif_every):
            bases[start:start + len(MOTIF)] = list(MOTIF)
    return "".join(bases)


def _task(folder, rng, make) -> str:
    """Two labels a / b, chromosomes split train (2) / val / test: manifest path."""
    rows = ["path\tlabel\tsplit"]
    for label in ("a", "b"):
        for split, names in (("train", ["c1", "c2"]), ("val", ["c3"]), ("test", ["c4"])):
            text = "".join(f">{label}_{name}\n{make(rng, label)}\n" for name in names)
            (folder / f"{label}.{split}.fa").write_text(text)
            rows.append(f"{label}.{split}.fa\t{label}\t{split}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return str(folder / "manifest.tsv")


def _learn(manifest: str, folder, steps: int) -> dict:
    run = finetune(FinetuneConfig(manifest=manifest, out_dir=str(folder / "run"), preset="tiny",
                                  model=dict(d_model=32, n_layer=2), seq_len=256, batch_size=16,
                                  max_steps=steps, lr=3e-3, val_every=steps, val_windows=16,
                                  log_every=steps, num_workers=0, seed=0))
    return evaluate(run.model_dir, manifest, folder / "eval", baseline="kmer",
                    batch_size=32, progress=False).metrics


@pytest.mark.slow
def test_two_labels_differing_in_gc_content_are_learnt(tmp_path):
    manifest = _task(tmp_path, np.random.default_rng(0),
                     lambda rng, label: _sequence(rng, 20_000, 0.4 if label == "a" else 0.6))
    metrics = _learn(manifest, tmp_path, 150)
    assert metrics["windows"]["balanced_accuracy"] >= 0.9, metrics["windows"]
    assert metrics["records"]["balanced_accuracy"] == 1.0


@pytest.mark.slow
def test_a_planted_motif_is_learnt(tmp_path):
    manifest = _task(tmp_path, np.random.default_rng(1),
                     lambda rng, label: _sequence(rng, 20_000, 0.5, 64 if label == "a" else 0))
    metrics = _learn(manifest, tmp_path, 300)
    assert metrics["windows"]["balanced_accuracy"] >= 0.9, metrics["windows"]
