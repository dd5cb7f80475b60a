"""Resume keeps the best validation score (issue 19): from a last.ckpt of the current code, from
one that stores it under ModelCheckpoint's key (written before BestCheckpoint existed), from
one lacking the entry (recovered from the best-*.ckpt beside it), and after the run folder was
moved. Without it the first validation after resume counted as the best, however bad."""

from __future__ import annotations

import shutil

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from mambadna.train import PretrainConfig, pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """4 steps validated at steps 2 and 4: last.ckpt (step 4) and the best file beside it."""
    folder = tmp_path_factory.mktemp("best")
    rng = np.random.default_rng(3)
    genome = folder / "g.fa"
    genome.write_text("".join(f">chr{i}\n{''.join(rng.choice(list('ACGT'), 6000))}\n"
                              for i in (1, 2)))
    settings = dict(genomes=[str(genome)], preset="tiny", seq_len=64, batch_size=2,
                    val_every=2, val_windows=4, val_fraction=0.2, log_every=1, num_workers=0,
                    seed=1)
    pretrain(PretrainConfig(out_dir=str(folder / "run"), max_steps=4, **settings))
    state = torch.load(folder / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    key = next(k for k in state["callbacks"] if k.startswith("BestCheckpoint{"))
    return folder / "run", settings, key, state["callbacks"][key]


class Seen(pl.Callback):
    """The best score and file the checkpoint callback holds when the resumed run starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.score = trainer.checkpoint_callback.best_model_score
        self.path = trainer.checkpoint_callback.best_model_path


def _in_place(copy, run):
    """As if the copied run had been written where it is (its saved paths name its folder)."""
    def edit(cbs):
        for state in cbs.values():
            for name in ("dirpath", "best_model_path", "kth_best_model_path"):
                if isinstance(state.get(name), str):
                    state[name] = state[name].replace(str(run), str(copy))
            if "best_k_models" in state:
                state["best_k_models"] = {k.replace(str(run), str(copy)): v
                                          for k, v in state["best_k_models"].items()}
    return edit


def _edit_last(run, edit) -> None:
    path = run / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=True)
    edit(state["callbacks"])
    torch.save(state, path)


@pytest.mark.parametrize("case", ["current", "no entry",  # ~1.5 s each
                                  pytest.param("old key", marks=pytest.mark.slow),
                                  pytest.param("moved folder", marks=pytest.mark.slow)])
def test_resume_keeps_the_best_score(first_run, tmp_path, case):
    run, settings, key, best = first_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    if case != "moved folder":
        _edit_last(copy, _in_place(copy, run))
    if case == "old key":  # what ModelCheckpoint itself wrote before BestCheckpoint
        _edit_last(copy, lambda cbs: cbs.update({key.replace("BestCheckpoint{",
                                                             "ModelCheckpoint{"): cbs.pop(key)}))
    elif case == "no entry":
        _edit_last(copy, lambda cbs: cbs.pop(key))
    elif case == "moved folder":  # the saved dirpath is the first run's, not this one's
        assert best["dirpath"] == str(run / "checkpoints")
    seen = Seen()
    result = pretrain(PretrainConfig(out_dir=str(copy), max_steps=6, resume=True, **settings),
                      callbacks=[seen])
    assert seen.score is not None and float(seen.score) == float(best["best_model_score"])
    assert seen.path == str(copy / "checkpoints" / best["best_model_path"].rsplit("/", 1)[-1])
    assert result.best_model_dir is not None


def test_resume_without_any_record_of_the_best_warns(first_run, tmp_path):
    run, settings, key, _best = first_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    _edit_last(copy, lambda cbs: cbs.pop(key))
    for best in (copy / "checkpoints").glob("best-*.ckpt"):
        best.unlink()
    seen = Seen()
    with pytest.warns(UserWarning, match="records no best val_loss"):
        pretrain(PretrainConfig(out_dir=str(copy), max_steps=6, resume=True, **settings),
                 callbacks=[seen])
    assert seen.score is None


def test_a_finished_run_resumed_further_numbers_its_steps_on(first_run, tmp_path):
    """last.ckpt written at the end of fit holds the counters of a save at the last step's
    end: the resumed attempt logs steps 5 and 6 (1-based: optimizer steps done), not 6 and 7
    (one late per attempt)."""
    run, settings, _key, _best = first_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = pretrain(PretrainConfig(out_dir=str(copy), max_steps=6, resume=True, **settings))
    assert (copy / "logs" / "version_1" / "start_step").read_text().strip() == "4"
    steps = result.metrics.dropna(subset=["train_loss"])["step"].tolist()
    assert steps == list(range(1, 7))
    assert torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
