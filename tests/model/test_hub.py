"""Models that travel: the Hugging Face layout (id2label / label2id in config.json), loading
by hub id from huggingface_hub's cache (offline: no network in tests), ModelHubMixin's
from_pretrained, folders saved before id2label existed, and nothing that could run code."""

from __future__ import annotations

import json
import shutil

import huggingface_hub
import pytest
import torch
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ModelFileError
from mambadna.model import MambaDNA, ModelConfig, load_model
from mambadna.model.hub import is_hub_id, model_folder

LABELS = ["ape", "bat"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=2, num_labels=2,
                                             pooling="mean"))
    return model.save_pretrained(tmp_path_factory.mktemp("m") / "model", labels=LABELS)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, saved):
    """A huggingface_hub cache holding user/dna at COMMIT (main) and offline mode on."""
    cache = tmp_path / "hub"
    repo = cache / "models--user--dna"
    shutil.copytree(saved, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return repo


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_config_carries_id2label_and_label2id(saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["id2label"] == {"0": "ape", "1": "bat"}
    assert config["label2id"] == {"ape": 0, "bat": 1}
    assert load_model(saved).labels == LABELS
    assert "user/name" in (saved / "README.md").read_text()


def test_from_pretrained_of_a_local_folder(saved):
    model = MambaDNA.from_pretrained(saved)
    assert model.labels == LABELS and _same_weights(model, load_model(saved))


def test_folders_saved_before_id2label_still_load(tmp_path, saved):
    old = shutil.copytree(saved, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (old / "config.json").write_text(json.dumps(config))
    assert load_model(old).labels == LABELS


def test_id2label_alone_or_disagreeing_with_labels_json(tmp_path, saved):
    folder = shutil.copytree(saved, tmp_path / "m")
    (folder / "labels.json").unlink()
    assert load_model(folder).labels == LABELS  # from config.json's id2label
    (folder / "labels.json").write_text(json.dumps(["bat", "ape"]))
    with pytest.raises(ModelFileError, match="name other classes"):
        load_model(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "id2label": {"0": "x"}}))
    with pytest.raises(ModelFileError, match="id2label must map"):
        load_model(folder)


def test_hub_id_loads_from_the_cache_offline(hub_cache, saved):
    assert is_hub_id("user/dna") and not is_hub_id(saved)
    for name, revision in (("user/dna", None), (f"user/dna@{COMMIT}", None),
                           ("user/dna", "main")):
        model = load_model(name, revision=revision)
        assert model.labels == LABELS and _same_weights(model, load_model(saved))
    assert MambaDNA.from_pretrained("user/dna").labels == LABELS
    with pytest.raises(ModelFileError, match="not in the local Hugging Face cache") as info:
        load_model("user/other")
    assert "hf download user/other" in str(info.value)
    with pytest.raises(ModelFileError, match="not in the local"):
        load_model("user/dna@v9")


def test_checksum_is_checked_and_pickles_never_load(hub_cache, payload):
    snapshot = hub_cache / "snapshots" / COMMIT
    weights = snapshot / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model("user/dna")
    weights.unlink()
    torch.save({"x": payload}, snapshot / "pytorch_model.bin")  # pickled weights: refused
    with pytest.raises(ModelFileError, match=r"missing model\.safetensors"):
        load_model("user/dna")
    assert not payload.marker.exists()


def test_revision_needs_a_hub_id(saved):
    with pytest.raises(ModelFileError, match="revision applies to hub ids"):
        model_folder(saved, "main")


def test_cli_classify_with_a_hub_id(hub_cache, tmp_path, write_fasta, random_dna):
    fa = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(80, seed=1)})
    out = tmp_path / "p.tsv"
    result = CliRunner().invoke(cli, ["classify", "--model", "user/dna", str(fa), "-o",
                                      str(out), "--window", "40"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "chr1" in text and ("ape" in text or "bat" in text)
    missing = CliRunner().invoke(cli, ["classify", "--model", "user/none", str(fa), "-o",
                                       str(tmp_path / "q.tsv")])
    assert missing.exit_code == 1 and "Hugging Face cache" in missing.output


def test_the_mixin_saves_our_format_with_the_training_info(tmp_path, saved):
    """push_to_hub saves through save_pretrained(folder, config=..., model_card_kwargs=...)
    before uploading: the folder it uploads is ours, training info kept."""
    model = load_model(saved)
    model.training_info = {"steps": 10}
    folder = model.save_pretrained(tmp_path / "up", config=None, model_card_kwargs=None)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "labels.json", "model.safetensors"]
    assert load_model(folder).training_info == {"steps": 10}
