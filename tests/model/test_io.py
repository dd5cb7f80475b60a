"""Saving and loading models: bit-exact round trips and a clear error for every broken file."""

from __future__ import annotations

import json

import pytest
import torch

import mambadna
from mambadna.alphabet import A, T
from mambadna.errors import ConfigError, ModelFileError
from mambadna.model import MambaDNA, ModelConfig, load_model


def small(**overrides) -> MambaDNA:
    torch.manual_seed(0)
    return MambaDNA(ModelConfig(d_model=16, n_layer=2, d_state=4, **overrides))


@pytest.fixture
def saved(tmp_path):
    """A saved 3-class classifier: (model, folder)."""
    model = small(num_labels=3, pooling="mean")
    folder = model.save_pretrained(tmp_path / "model", labels=["human", "chimp", "gorilla"],
                                   training_info={"data": "simulated great apes", "steps": 10})
    return model, folder


def test_round_trip_is_bit_exact(saved, tmp_path):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "labels.json", "model.safetensors"]
    (tmp_path / "plain").mkdir()  # the folder gets the modes of any new folder (not private)
    assert folder.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    loaded = mambadna.load_model(folder)
    assert not loaded.training and loaded.config == model.config
    assert loaded.labels == ["human", "chimp", "gorilla"]
    assert loaded.training_info == {"data": "simulated great apes", "steps": 10}
    assert loaded.weights_sha256 == model.weights_sha256 and len(model.weights_sha256) == 64
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    tokens = torch.randint(A, T + 1, (2, 30), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))
        assert torch.equal(model.classify_logits(tokens), loaded.classify_logits(tokens))


def test_tied_head_stored_once_and_no_pickle(saved):
    _, folder = saved
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert "embedding.weight" in names and not any("lm_head" in n for n in names)
    assert not any(p.suffix in (".bin", ".pt", ".pkl", ".ckpt") for p in folder.iterdir())


def test_config_json_and_model_card(saved):
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mambadna" and config["format_version"] == 1
    assert config["mambadna_version"] == mambadna.__version__ and config["d_model"] == 16
    card = (folder / "README.md").read_text()
    assert f"{model.num_parameters():,} parameters" in card
    assert "human, chimp, gorilla" in card and "simulated great apes" in card


def test_language_model_saves_without_labels_and_overwrites(tmp_path):
    folder = tmp_path / "model"
    small(num_labels=2).save_pretrained(folder, labels=["a", "b"])
    lm = small()
    lm.save_pretrained(folder)  # replaces the classifier, drops its stale labels.json
    assert not (folder / "labels.json").exists()
    loaded = load_model(folder)
    assert loaded.labels is None and loaded.classifier is None
    assert "not recorded" in (folder / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_classifier_without_labels_gets_default_names(tmp_path):
    folder = small(num_labels=2).save_pretrained(tmp_path / "m")
    assert load_model(folder).labels == ["class_0", "class_1"]


@pytest.mark.parametrize("labels, message", [(["a", "b"], "needs 3 distinct"),
                                             (["a", "a", "b"], "needs 3 distinct")])
def test_save_rejects_bad_labels(tmp_path, labels, message):
    with pytest.raises(ConfigError, match=message):
        small(num_labels=3).save_pretrained(tmp_path / "m", labels=labels)
    with pytest.raises(ConfigError, match="without a classification head"):
        small().save_pretrained(tmp_path / "m", labels=["a", "b"])
    assert not (tmp_path / "m").exists()


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor's data: the header still parses
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("break_it, file, message", [
    (lambda f: (f / "config.json").unlink(), "model", "missing config.json"),
    (lambda f: (f / "config.json").write_text("{not json"), "config.json", "invalid JSON"),
    (lambda f: _edit_config(f, n_layers=3), "config.json", "unknown model config key"),
    (lambda f: _edit_config(f, model_type="llama"), "config.json", "not a mambadna model"),
    (lambda f: _edit_config(f, format_version=99), "config.json", "format_version 99"),
    (lambda f: _edit_config(f, d_model=0), "config.json", "d_model must be"),
    (lambda f: (f / "model.safetensors").unlink(), "model", "missing model.safetensors"),
    (lambda f: _flip_a_byte(f / "model.safetensors"), "model.safetensors", "sha256 differs"),
    # a folder saved before config.json carried id2label: labels.json is where the labels are
    (lambda f: (_edit_config(f, id2label=None), (f / "labels.json").unlink()), "model",
     "missing labels.json"),
    (lambda f: (f / "labels.json").write_text('["a"]'), "labels.json", "3 distinct strings"),
])
def test_broken_folders_name_the_file_and_reason(saved, break_it, file, message):
    _, folder = saved
    break_it(folder)
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(folder)
    assert err.value.path.endswith(file)


def test_truncated_and_mismatched_weights(saved, tmp_path):
    _, folder = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    _edit_config(folder, weights_sha256=None)  # skip the checksum: the parser must catch it
    with pytest.raises(ModelFileError, match="corrupt or not a safetensors file"):
        load_model(folder)
    # Weights of another size under a valid config: the shape mismatch is named.
    other = MambaDNA(ModelConfig(d_model=32, n_layer=2, d_state=4, num_labels=3))
    other.save_pretrained(tmp_path / "other", labels=["x", "y", "z"])
    (tmp_path / "other" / "model.safetensors").replace(weights)
    with pytest.raises(ModelFileError, match="has shape"):
        load_model(folder)
    # Weights of a model with fewer layers: the missing tensors are named.
    short = MambaDNA(ModelConfig(d_model=16, n_layer=1, d_state=4, num_labels=3))
    short.save_pretrained(tmp_path / "short", labels=["x", "y", "z"])
    (tmp_path / "short" / "model.safetensors").replace(weights)
    with pytest.raises(ModelFileError, match=r"missing \['layers.1"):
        load_model(folder)


def test_missing_folder_and_file_path(tmp_path):
    with pytest.raises(ModelFileError, match="model folder not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFileError, match="is a file"):
        load_model(tmp_path / "file")


def test_pickled_files_never_run(saved, payload):
    import pickle

    _, folder = saved
    weights = folder / "model.safetensors"
    torch.save({"embedding.weight": payload}, weights)  # a torch pickle in the weights' place
    _edit_config(folder, weights_sha256=None)  # even without a checksum to stop it first
    with pytest.warns(UserWarning), pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(folder)
    for name in ("config.json", "labels.json"):
        original = (folder / name).read_bytes()
        (folder / name).write_bytes(pickle.dumps(payload))
        with pytest.raises(ModelFileError, match=f"{name}.*invalid JSON"):
            load_model(folder)
        (folder / name).write_bytes(original)
    assert not payload.marker.exists()


def test_a_folder_without_checksum_warns_and_strict_refuses(saved):
    from click.testing import CliRunner

    from mambadna.cli import cli
    from mambadna.model.io import UnverifiedModelWarning

    _, folder = saved
    _edit_config(folder, weights_sha256=None)
    with pytest.warns(UnverifiedModelWarning, match=f"{folder}.*no weights_sha256"):
        load_model(folder)
    with pytest.raises(ModelFileError, match=r"no weights_sha256.*--strict") as err:
        load_model(folder, strict=True)
    assert err.value.path == str(folder) and "save the model again" in str(err.value)
    (folder.parent / "x.fa").write_text(">a\nACGT\n")
    for args in (["classify", str(folder.parent / "x.fa"), "-o", str(folder.parent / "p.tsv")],
                 ["embed", str(folder.parent / "x.fa"), "-o", str(folder.parent / "e.parquet")],
                 ["evaluate", "--manifest", str(folder.parent / "m.tsv"), "-o",
                  str(folder.parent / "ev")]):
        result = CliRunner().invoke(cli, [*args, "--model", str(folder), "--strict"])
        assert result.exit_code == 1, result.output
        assert "no weights_sha256" in result.output and "Traceback" not in result.output
    assert not any(p.name in ("p.tsv", "e.parquet", "ev") for p in folder.parent.iterdir())
