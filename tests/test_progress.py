"""Progress bars (mambadna.progress, tqdm): drawn when asked for or on a terminal, never with
--quiet or into a pipe, and wired into tokenize, validate, simulate, fetch, classify and embed."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.progress import DownloadBars, bar, shown


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_shown_on_a_terminal_only_unless_forced():
    assert shown(None, Terminal()) and not shown(None, io.StringIO())
    assert not shown(False, Terminal()) and shown(True, io.StringIO())
    stream = Terminal()
    with bar("embed", 2_000_000, stream=stream) as b:
        b.set_postfix_str("chr1", refresh=False)
        b.update(500_000)
    text = stream.getvalue()
    assert "embed" in text and "25%" in text and "500k/2.00M" in text and "chr1" in text
    quiet = Terminal()
    with bar("embed", 10, enabled=False, stream=quiet) as b:
        b.update(10)
    assert quiet.getvalue() == ""


def test_download_bars_one_per_file_from_a_resumed_offset():
    stream = io.StringIO()
    bars = DownloadBars(enabled=True, stream=stream)
    bars("a.fa.gz", 400, 1000)  # resumed: 400 bytes were in the .part file
    bars("a.fa.gz", 1000, 1000)
    bars("b.fa.gz", 10, None)
    bars.close()
    text = stream.getvalue()
    assert "a.fa.gz:  40%" in text and "a.fa.gz: 100%" in text and "1.00k/1.00k" in text
    assert "b.fa.gz" in text


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "g.fa"
    path.write_text(">chr1\n" + "ACGT" * 500 + "\n>chr2\n" + "GGCA" * 250 + "\n")
    return path


def test_tokenize_and_validate_draw_bars_unless_quiet(fasta, tmp_path, monkeypatch):
    from mambadna.data.store import write_token_store
    from mambadna.io.validate import validate

    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    write_token_store([fasta], tmp_path / "store", progress=True)
    assert "tokenize" in stream.getvalue() and "3.00kb" in stream.getvalue()
    validate([fasta], progress=True)
    assert "validate g.fa" in stream.getvalue()
    # the CLI: --quiet draws nothing, and a pipe (CliRunner's stderr) gets no bar either
    for args in (["tokenize", str(fasta), "-o", str(tmp_path / "s2"), "--quiet"],
                 ["validate", str(fasta), "--quiet"], ["validate", str(fasta)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "it/s" not in result.output and "b/s" not in result.output
        assert "\r" not in result.output


def test_simulate_draws_a_bar_of_chromosomes(tmp_path, monkeypatch):
    from mambadna.simulate import simulate_species

    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    simulate_species(tmp_path / "sim", species=["human", "orangutan"], length=20_000,
                     n_chromosomes=2, seed=3, progress=True)
    assert "simulate" in stream.getvalue() and "2/2" in stream.getvalue()


def test_classify_and_embed_draw_a_bar_of_bases(fasta, tmp_path, monkeypatch):
    import torch

    from mambadna.model import MambaDNA, ModelConfig
    from mambadna.pipelines import embed
    from mambadna.pipelines.classify import classify

    torch.manual_seed(0)
    model_dir = MambaDNA(ModelConfig.from_preset("tiny", d_model=16, n_layer=1, num_labels=2)
                         ).save_pretrained(tmp_path / "model", labels=["a", "b"])
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    classify(model_dir, [fasta], window=500, device="cpu", progress=True)
    # bases done and the rate (a total and a percentage where inputs are indexed FASTA)
    assert "classify: 3.00kb" in stream.getvalue() and "b/s" in stream.getvalue()
    embed(model_dir, [fasta], tmp_path / "e.parquet", window=500, device="cpu", progress=True)
    assert "embed" in stream.getvalue() and "chr2" in stream.getvalue()
    before = stream.getvalue()
    embed(model_dir, [fasta], tmp_path / "e2.parquet", window=500, device="cpu", progress=False)
    assert stream.getvalue() == before  # --quiet
