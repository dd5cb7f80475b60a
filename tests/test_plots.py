"""Figures (mambadna.plots): training curves of a real run folder through the library and
`mambadna plot-run`, confusion matrices, formats and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ConfigError, InputError, InputFileError
from mambadna.plots import (
    confusion_figure,
    plot_run,
    read_metrics,
    save,
    training_figure,
    training_series,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def _is_svg(path) -> bool:
    text = path.read_text()
    return text.startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>") \
        and path.stat().st_size > 10_000


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real finetuning run: two tiny 'species' of different GC, 6 steps, 2 validations."""
    from mambadna.train import FinetuneConfig, finetune

    folder = tmp_path_factory.mktemp("plots")
    rng = np.random.default_rng(0)
    rows = ["path\tlabel\tsplit"]
    for label, gc in (("at", 0.3), ("gc", 0.7)):
        for split in ("train", "val"):
            p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
            seq = "".join(rng.choice(list("ACGT"), 1500, p=p))
            (folder / f"{label}.{split}.fa").write_text(f">{label}_{split}\n{seq}\n")
            rows.append(f"{label}.{split}.fa\t{label}\t{split}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    finetune(FinetuneConfig(manifest=str(folder / "manifest.tsv"), out_dir=str(folder / "run"),
                            preset="tiny", model={"d_model": 16, "n_layer": 1}, seq_len=32,
                            batch_size=2, max_steps=6, val_every=3, val_windows=2, log_every=1,
                            num_workers=0))
    return folder / "run"


def test_plot_run_draws_loss_and_accuracy_of_a_real_run(run_dir, tmp_path):
    series = training_series(read_metrics(run_dir))
    assert set(series["loss"]) == {"train_loss", "val_loss"}
    assert series["loss"]["train_loss"][0] == [1, 2, 3, 4, 5, 6]  # steps done
    assert series["accuracy"]["val_acc"][0] == [3, 6]
    path = plot_run(run_dir)
    assert path == run_dir / "training_curves.png" and _is_png(path)
    svg = plot_run(run_dir / "metrics.csv", tmp_path / "curves.svg",
                   panels=("loss", "accuracy", "learning rate"))
    assert _is_svg(svg) and svg.read_text().count("<g id=\"axes_") == 3


def test_plot_run_cli(run_dir, tmp_path):
    out = tmp_path / "c.pdf"
    result = CliRunner().invoke(cli, ["plot-run", str(run_dir), "-o", str(out), "--panel",
                                      "loss"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out) and out.read_bytes()[:5] == b"%PDF-"
    missing = CliRunner().invoke(cli, ["plot-run", str(tmp_path)])
    assert missing.exit_code == 1 and "no metrics.csv here" in missing.output
    assert "Traceback" not in missing.output
    bad = CliRunner().invoke(cli, ["plot-run", str(run_dir), "-o", str(tmp_path / "c.jpg")])
    assert bad.exit_code == 1 and "end the name with one of .png, .svg, .pdf" in bad.output
    assert not (tmp_path / "c.jpg").exists()


def test_a_run_without_rows_or_with_a_broken_csv_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"step": [1], "epoch": [0], "seq_len": [64]}).to_csv(run / "metrics.csv",
                                                                       index=False)
    with pytest.raises(InputError, match="logged none of loss, accuracy yet"):
        plot_run(run)
    (run / "metrics.csv").write_bytes(b"")
    with pytest.raises(InputError, match="not a metrics table"):
        plot_run(run)
    with pytest.raises(InputFileError, match=r"no metrics\.csv"):
        plot_run(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="unknown panel 'los'"):
        plot_run(run, panels=("los",))
    assert training_figure(training_series(pd.DataFrame({"step": [1]}))) is None


def test_confusion_figure_png_and_svg(tmp_path):
    fig = confusion_figure(["human", "chimpanzee", "gorilla"],
                           [[8, 2, 0], [1, 9, 0], [0, 3, 7]], "windows")
    assert _is_png(save(fig, tmp_path / "c.png"))
    svg = save(fig, tmp_path / "c.svg")
    assert _is_svg(svg) and "chimpanzee" in svg.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "c.svg"]  # no temporaries
