"""Batch stream (index-deterministic, resumable, worker-independent), species sampling,
manifests, and the species data split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mambadna.alphabet import A, C, G, T
from mambadna.data.datasets import BatchStream, LMExamples, SpeciesExamples, WindowDataset
from mambadna.data.module import WindowDataModule
from mambadna.data.prepare import species_data
from mambadna.data.sampling import TokenSource, WindowSampler, whole_records
from mambadna.data.schedule import SeqLenSchedule
from mambadna.errors import ConfigError, FormatError, InputFileError
from mambadna.manifests.labelled import read_manifest


def lm_source(seed: int = 0, lengths=(5000, 3000)) -> TokenSource:
    rng = np.random.default_rng(seed)
    bases = np.array([A, C, G, T], dtype=np.uint8)
    return TokenSource.from_arrays((f"chr{i}", bases[rng.integers(0, 4, n)])
                                   for i, n in enumerate(lengths))


def stream(schedule, **kw) -> BatchStream:
    source = lm_source()
    return BatchStream(LMExamples(WindowSampler(source, whole_records(source), rc_prob=0.5)),
                       schedule, seed=11, **kw)


def test_batches_follow_the_schedule_per_optimizer_step():
    schedule = SeqLenSchedule(256, 2, 64, stage_steps=3)
    batches = stream(schedule, accumulate=2, stop=16)
    shapes = [tuple(b["tokens"].shape) for b in batches]
    # micro-batches 0-5 are steps 0-2 (length 64), 6-11 steps 3-5 (128), then 256
    assert shapes == [(8, 64)] * 6 + [(4, 128)] * 6 + [(2, 256)] * 4
    assert all(b["tokens"].dtype == torch.uint8 for b in stream(schedule, stop=2))


def test_resuming_at_a_start_index_continues_the_same_stream():
    schedule = SeqLenSchedule(128, 4)
    full = list(stream(schedule, stop=10))
    tail = list(stream(schedule, start=6, stop=10))
    for a, b in zip(full[6:], tail):
        assert torch.equal(a["tokens"], b["tokens"])
    other_rank = next(iter(stream(schedule, rank=1, stop=1)))
    assert not torch.equal(other_rank["tokens"], full[0]["tokens"])


def test_the_stream_does_not_depend_on_the_number_of_workers():
    data = stream(SeqLenSchedule(64, 3), stop=6)
    alone = [b["tokens"] for b in DataLoader(data, batch_size=None, num_workers=0)]
    shared = [b["tokens"] for b in DataLoader(data, batch_size=None, num_workers=2)]
    assert len(shared) == 6 and all(torch.equal(a, b) for a, b in zip(alone, shared))


def test_datamodule_starts_where_the_trainer_stands():
    source = lm_source()
    module = WindowDataModule(LMExamples(WindowSampler(source, whole_records(source))),
                              SeqLenSchedule(64, 2), seed=3, accumulate=4,
                              val=WindowDataset(source, [(0, 0), (1, 64)], 64))

    class Trainer:  # what the DataModule reads of a Lightning trainer
        global_step, global_rank, world_size = 5, 0, 1

    trainer = module.trainer = Trainer()
    val = next(iter(module.val_dataloader()))
    assert val["tokens"].shape == (2, 64)
    assert val["tokens"][0].numpy().tobytes() == source.tokens(0)[:64].tobytes()
    trainer.global_rank, trainer.world_size = 1, 2
    data = module.train_dataset()
    assert (data.start, data.rank) == (20, 1)
    shard = [b["tokens"] for b in module.val_dataloader()]  # rank 1 of 2: the second window
    assert len(shard) == 1 and shard[0].shape == (1, 64)
    assert shard[0][0].numpy().tobytes() == source.tokens(1)[64:128].tobytes()


def test_species_examples_pick_labels_uniformly_and_windows_of_that_label():
    small, big = lm_source(1, (400,)), lm_source(2, (50_000,))
    samplers = [WindowSampler(s, whole_records(s)) for s in (small, big)]
    examples = SpeciesExamples(samplers)
    rng = np.random.default_rng(0)
    labels = []
    for _ in range(600):
        window, label = examples.example(rng, 100)
        labels.append(label)
        own = (small, big)[label].tokens(0).tobytes()
        assert window.tobytes() in own
    assert np.mean(labels) == pytest.approx(0.5, abs=0.07)  # not 0.99: uniform over species


# --- manifests ----------------------------------------------------------------------------------

def write_fasta(path, records: dict[str, int], seed: int) -> str:
    rng = np.random.default_rng(seed)
    path.write_text("".join(f">{name}\n{''.join(rng.choice(list('ACGT'), n))}\n"
                            for name, n in records.items()))
    return path.name


def manifest_folder(tmp_path, rows: list[str]):
    for i, name in enumerate(("a.train.fa", "a.val.fa", "b.train.fa", "b.val.fa", "c.fa")):
        write_fasta(tmp_path / name, {f"chr{i}": 600}, seed=i)
    path = tmp_path / "manifest.tsv"
    path.write_text("\n".join(["path\tlabel\tsplit", *rows]) + "\n")
    return path


def test_manifest_rows_paths_relative_to_the_tsv(tmp_path):
    path = manifest_folder(tmp_path, ["a.train.fa\tape\ttrain", "# a comment", "",
                                      "b.train.fa\tmonkey", "a.val.fa\tape\tval"])
    rows = read_manifest(path)
    assert [(r.path.name, r.label, r.split, r.line) for r in rows] == [
        ("a.train.fa", "ape", "train", 2), ("b.train.fa", "monkey", "train", 5),
        ("a.val.fa", "ape", "val", 6)]


@pytest.mark.parametrize(("rows", "error", "pattern"), [
    (["missing.fa\tape\ttrain"], InputFileError, r"manifest\.tsv:2: .*missing\.fa"),
    (["a.train.fa\tape\ttrain", "a.val.fa\tape\tvalidation"], FormatError,
     r"manifest\.tsv:3: split 'validation'"),
    (["a.train.fa\tape", "a.train.fa\tape\tval"], FormatError, r":3: .*listed twice"),
    (["a.train.fa\t\ttrain"], FormatError, "empty path or label"),
])
def test_bad_manifest_rows_name_the_line(tmp_path, rows, error, pattern):
    with pytest.raises(error, match=pattern):
        read_manifest(manifest_folder(tmp_path, rows))


def test_manifest_without_label_column(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("path\tspecies\nx.fa\tape\n")
    with pytest.raises(FormatError, match=r"m\.tsv:1: .*lacks column\(s\) label"):
        read_manifest(path)


def species_source(rows) -> TokenSource:
    from mambadna.data.store import write_token_store

    store = rows[0].path.parent / "store"
    return TokenSource.from_store(write_token_store([r.path for r in rows], store))


def test_species_split_given_val_rows_and_held_out_regions(tmp_path):
    path = manifest_folder(tmp_path, ["a.train.fa\tape\ttrain", "a.val.fa\tape\tval",
                                      "b.train.fa\tmonkey\ttrain", "c.fa\tmonkey\ttest"])
    rows = read_manifest(path)
    data = species_data(rows, species_source(rows), path, val_fraction=0.1)
    assert data.labels == ["ape", "monkey"]
    assert data.split["ape"]["rule"] == "given"
    assert data.split["monkey"]["rule"] == "regions"  # no val rows: end of its train record
    (train,), (val,) = data.train[1], data.val[1]
    assert train.end == val.start == 540 and val.end == 600
    assert len(data.test[1]) == 1 and data.test[0] == []


def test_val_label_without_train_rows_is_an_error(tmp_path):
    path = manifest_folder(tmp_path, ["a.train.fa\tape\ttrain", "b.train.fa\tmonkey\ttrain",
                                      "a.val.fa\tgorilla\tval"])
    rows = read_manifest(path)
    with pytest.raises(ConfigError, match=r"manifest\.tsv:4: label 'gorilla'.*no train rows"):
        species_data(rows, species_source(rows), path)
