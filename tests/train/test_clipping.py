"""Gradient clipping with a fused AdamW under bf16 autocast: the defaults of a GPU run.

Lightning's mixed-precision plugin refused to clip with any optimizer that unscales in its step
(the fused AdamW), even under bf16 where nothing is scaled, so `pretrain` and `finetune` with
default options stopped at the first optimizer step on a GPU. The CPU has both a fused AdamW
and bf16 autocast, so the same path runs here.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from mambadna.model import MambaDNA, ModelConfig
from mambadna.train.modules import LanguageModelModule, OptimSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _NormAfterClipping(LanguageModelModule):
    """Records the total gradient norm right after clipping (what the optimizer then uses)."""

    norms: list

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def _batches(n: int, length: int = 64) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [{"tokens": torch.randint(5, 9, (4, length), generator=generator,
                                     dtype=torch.uint8)} for _ in range(n)]


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fused_adamw_clips_without_a_scaler(precision, tmp_path):
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig(d_model=16, n_layer=1))
    settings = OptimSettings(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), max_steps=3,
                             lr_warmup=0.0, min_lr_ratio=0.1, fused=True)
    module = _NormAfterClipping(model, settings)
    module.norms = []
    clip = 1e-3  # far below the norm of a first gradient: clipping must act
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=3,
                         gradient_clip_val=clip, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(module, train_dataloaders=DataLoader(_batches(3), batch_size=None))
    optimizer = trainer.optimizers[0]
    assert optimizer.defaults["fused"] is True
    assert len(module.norms) == 3
    assert all(norm <= clip * (1 + 1e-3) for norm in module.norms), module.norms
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the optimizer never stepped"


def test_the_classification_head_can_learn_faster_than_the_backbone():
    from mambadna.train.optim import decay_groups

    model = MambaDNA(ModelConfig(d_model=16, n_layer=1, num_labels=3))
    plain = decay_groups(model, 0.1)
    assert [g["weight_decay"] for g in plain] == [0.1, 0.0] and "lr" not in plain[0]
    groups = decay_groups(model, 0.1, scaled="classifier.", lr=1e-3, scale=10.0)
    head = {id(p) for p in model.classifier.parameters()}
    assert len(groups) == 4
    for group in groups[2:]:
        assert group["lr"] == pytest.approx(1e-2)
        assert {id(p) for p in group["params"]} <= head
    assert sum(len(g["params"]) for g in groups) == sum(len(g["params"]) for g in plain)
    assert not any(id(p) in head for g in groups[:2] for p in g["params"])
