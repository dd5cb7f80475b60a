"""Training configs (YAML round-trip, precedence, unknown keys), batch resolution, optimizer
groups, the learning-rate schedule and classification metrics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import yaml

from mambadna.errors import ConfigError
from mambadna.train.config import FinetuneConfig, PretrainConfig, dump_yaml, load_config


def test_yaml_round_trip_and_run_controls_not_saved(tmp_path):
    config = PretrainConfig(genomes=["g.fa"], out_dir=str(tmp_path / "run"), seq_len=4096,
                            warmup_start=1024, warmup_stage=10, model={"bidirectional": True},
                            force=True)
    text = dump_yaml(config.to_dict())
    assert "force" not in yaml.safe_load(text)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    again = load_config(PretrainConfig, path)
    assert again == PretrainConfig(**{**config.to_dict(), "force": False})


def test_precedence_defaults_yaml_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("genomes: [g.fa]\nout_dir: run\nseq_len: 2048\nlr: 4e-3\nmax_steps: 50\n")
    config = load_config(PretrainConfig, path, {"max_steps": 7})
    assert (config.seq_len, config.lr, config.max_steps, config.batch_size) == (2048, 4e-3, 7, 8)
    assert isinstance(config.lr, float)  # PyYAML reads 4e-3 as a string


def test_resume_reads_the_saved_config_under_the_flags(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = PretrainConfig(genomes=["g.fa"], out_dir=str(run), seq_len=512, max_steps=10)
    (run / "config.yaml").write_text(dump_yaml({**saved.to_dict(), "resolved": {"x": 1}}))
    config = load_config(PretrainConfig, None, {"out_dir": str(run), "resume": True,
                                                "max_steps": 20})
    assert (config.seq_len, config.max_steps, config.resume) == (512, 20, True)


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("genomes: [g.fa]\nout_dir: run\nseq_length: 10\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: unknown key\(s\) 'seq_length'.*seq_len"):
        load_config(PretrainConfig, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(PretrainConfig, path)


@pytest.mark.parametrize(("fields", "pattern"), [
    ({}, "either --genome"),
    ({"genomes": ["g.fa"], "store": "s"}, "either --genome"),
    ({"genomes": ["g.fa"], "seq_len": 0}, "seq-len must be at least 1"),
    ({"genomes": ["g.fa"], "rc_prob": 1.5}, r"rc-prob must be in \[0, 1\]"),
    ({"genomes": ["g.fa"], "warmup_start": 256}, "needs --warmup-stage"),
    ({"genomes": ["g.fa"], "preset": "huge"}, "preset is 'huge', expected one of tiny"),
    ({"genomes": ["g.fa"], "strategy": "horovod"}, "expected one of auto, ddp"),
    ({"genomes": ["g.fa"], "max_steps": "ten"}, "max_steps must be int"),
])
def test_bad_pretrain_configs(fields, pattern):
    with pytest.raises(ConfigError, match=pattern):
        PretrainConfig(out_dir="run", **fields)


def test_finetune_needs_exactly_one_start_and_parses_class_weights():
    with pytest.raises(ConfigError, match="either --from MODEL_DIR or --preset"):
        FinetuneConfig(manifest="m.tsv", out_dir="run")
    with pytest.raises(ConfigError, match="either --from MODEL_DIR or --preset"):
        FinetuneConfig(manifest="m.tsv", out_dir="run", preset="tiny", from_model="pre/model")
    config = FinetuneConfig(manifest="m.tsv", out_dir="run", preset="tiny",
                            class_weights="human=2, chimp=0.5", devices="2")
    assert config.class_weights == {"human": 2.0, "chimp": 0.5} and config.devices == 2
    with pytest.raises(ConfigError, match="label=weight"):
        FinetuneConfig(manifest="m.tsv", out_dir="run", preset="tiny", class_weights="human")


def test_tokens_per_step_sets_the_batch_and_epochs_convert_to_steps():
    from mambadna.train.run import _schedule

    config = PretrainConfig(genomes=["g.fa"], out_dir="run", seq_len=4096, accumulate=2,
                            tokens_per_step=4096 * 2 * 4 * 8, warmup_start=1024,
                            warmup_stage=0.5, warmup_unit="epochs", max_steps=100)
    schedule, resolved = _schedule(config, world=4, train_bases=10 * 262_144)
    assert resolved["batch_size_per_device"] == 8 and resolved["tokens_per_step"] == 262_144
    assert resolved["steps_per_epoch"] == 10 and schedule.stage_steps == 5
    assert [s["batch_size"] for s in resolved["stages"]] == [32, 16, 8]
    bad = PretrainConfig(genomes=["g.fa"], out_dir="run", seq_len=4096, tokens_per_step=5000)
    with pytest.raises(ConfigError, match="not a multiple of seq-len x accumulate x devices"):
        _schedule(bad, world=1, train_bases=10**6)


# --- optimizer, schedule, metrics ---------------------------------------------------------------

def test_weight_decay_only_on_matrices():
    from mambadna.model import MambaDNA, ModelConfig
    from mambadna.train.optim import decay_groups

    model = MambaDNA(ModelConfig.from_preset("tiny", n_layer=1, num_labels=3))
    decay, no_decay = decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert {"layers.0.norm.weight", "norm_f.weight", "classifier.bias"} <= kept
    assert any(n.endswith("A_log") for n in kept) and any(n.endswith(".D") for n in kept)
    assert any(n.endswith("dt_proj.bias") for n in kept)
    assert {"embedding.weight", "layers.0.mixer.in_proj.weight", "classifier.weight"} <= decayed
    assert not any(n.endswith("bias") for n in decayed)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decayed | kept) == len(list(model.parameters()))


def test_cosine_schedule_with_linear_warmup():
    from mambadna.train.optim import cosine_with_warmup

    factor = cosine_with_warmup(max_steps=100, warmup_fraction=0.1, min_ratio=0.1)
    assert factor(0) == pytest.approx(1 / 11) and factor(9) == pytest.approx(10 / 11)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(100) == pytest.approx(0.1) and factor(500) == pytest.approx(0.1)
    values = [factor(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_classification_metrics_from_the_confusion_matrix(tmp_path):
    from mambadna.train.metrics import (
        accuracy,
        confusion_update,
        macro_f1,
        write_confusion_csv,
    )

    matrix = torch.zeros(3, 3)
    confusion_update(matrix, torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 1, 2, 0]))
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert accuracy(matrix) == pytest.approx(4 / 6)
    f1 = [2 * 1 / (2 + 1 + 1), 2 * 2 / (4 + 1), 2 * 1 / (2 + 1)]
    assert macro_f1(matrix) == pytest.approx(sum(f1) / 3)
    assert math.isnan(accuracy(torch.zeros(2, 2)))
    path = write_confusion_csv(matrix, ["a", "b", "c"], tmp_path / "cm.csv")
    assert path.read_text().splitlines() == ["true\\predicted,a,b,c", "a,1,1,0", "b,0,2,0",
                                             "c,1,0,1"]
