"""embed's choices (--layer, --pool cls, --rc-average) and its batching: a window's embedding
does not depend on what it is batched with, and packing short windows keeps rows and order."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import mambadna as md
from mambadna.cli import cli
from mambadna.errors import ConfigError
from mambadna.model import MambaDNA, ModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(**overrides) -> MambaDNA:
    torch.manual_seed(0)
    return MambaDNA(ModelConfig(**{"d_model": 16, "n_layer": 3, "d_state": 4, **overrides}))


@pytest.fixture
def records(tmp_path, write_fasta, random_dna):
    """Records of decreasing and mixed lengths, one with N, so batches pad most rows."""
    seqs = {"long": random_dna(96, seed=1), "mid": random_dna(40, seed=2) + "NNNN",
            "short": random_dna(13, seed=3), "mid2": random_dna(70, seed=4),
            "one": random_dna(5, seed=5)}
    return write_fasta(tmp_path / "mixed.fa", seqs)


def vectors(frame: pd.DataFrame) -> np.ndarray:
    return np.stack(frame["embedding"].to_numpy())


@pytest.mark.parametrize("kind", ["causal", "bidirectional", "rc_equivariant"])
@pytest.mark.parametrize("pool", ["mean", "max", "last", "cls"])
def test_a_window_embeds_the_same_alone_or_batched_with_shorter_ones(records, kind, pool):
    model = build(**({} if kind == "causal" else {kind: True}))
    run = dict(window=96, min_window=1, pool=pool, layers="-1,0", device="cpu",
               progress=False)
    alone = md.embed(model, records, batch_size=1, **run)
    batched = md.embed(model, records, batch_size=5, **run)
    assert list(alone["record_id"]) == ["long", "mid", "short", "mid2", "one"]
    np.testing.assert_allclose(vectors(batched), vectors(alone), rtol=1e-5, atol=1e-6)
    assert batched.attrs["mambadna"]["layers"] == [0, 2]


def test_packed_short_windows_keep_rows_and_order(tmp_path, write_fasta, random_dna):
    reads = {f"read{i}": random_dna(20 + (7 * i) % 45, seed=i) for i in range(30)}
    path = write_fasta(tmp_path / "reads.fa", reads)
    model = build()
    run = dict(window=64, min_window=1, device="cpu", progress=False)
    one = md.embed(model, path, batch_size=1, **run)
    packed = md.embed(model, path, batch_size=4, **run)  # 4 x 64 bases: up to 12 reads a pass
    columns = ["record_id", "start", "end", "strand", "n_fraction"]
    pd.testing.assert_frame_equal(packed[columns], one[columns])
    assert list(packed["record_id"]) == list(reads)
    np.testing.assert_allclose(vectors(packed), vectors(one), rtol=1e-5, atol=1e-6)


def test_layers_select_blocks(records):
    model = build()
    run = dict(window=96, min_window=1, device="cpu", progress=False)
    last = vectors(md.embed(model, records, **run))
    np.testing.assert_array_equal(vectors(md.embed(model, records, layers=2, **run)), last)
    first = vectors(md.embed(model, records, layers=[0], **run))
    mixed = vectors(md.embed(model, records, layers="0,-1", **run))
    np.testing.assert_allclose(mixed, (first + last) / 2, rtol=1e-5, atol=1e-6)
    assert np.abs(first - last).max() > 1e-3


def test_cli_layer_pool_and_their_errors(tmp_path, records):
    model_dir = build().save_pretrained(tmp_path / "model")
    base = ["embed", "--model", str(model_dir), str(records), "--window", "96",
            "--min-window", "1", "--device", "cpu", "--quiet"]
    ok = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "e.parquet"), "--layer", "-1,-2",
                                  "--pool", "cls"])
    assert ok.exit_code == 0, ok.output
    meta = md.read_embeddings(tmp_path / "e.parquet").attrs["mambadna"]
    assert meta["layers"] == [1, 2] and meta["pooling"] == "cls"
    for extra, message in ((["--layer", "3"], "layer 3 is not a block of this model"),
                           (["--layer", "a,b"], "--layer must be block indices"),
                           (["--pool", "cls", "--stream"], "--pool cls appends a CLS token")):
        bad = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "bad.parquet"), *extra])
        assert bad.exit_code == 1 and message in bad.output, bad.output
        assert not (tmp_path / "bad.parquet").exists()


def test_rc_average_is_one_option_everywhere():
    helps = []
    for command in ("classify", "embed", "evaluate"):
        text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
        found = re.search(r"--rc-average / --no-rc-average\s+(.*?)\[default: no-rc-average\]",
                          " ".join(text.split()))
        assert found, text
        helps.append(found.group(1))
    assert helps[0] == helps[1] == helps[2] and "reverse complement" in helps[0]


def test_rc_average_on_an_equivariant_model_is_its_own_output(records):
    model = build(rc_equivariant=True)
    run = dict(window=96, min_window=1, device="cpu", progress=False)
    plain = md.embed(model, records, **run)
    averaged = md.embed(model, records, rc_average=True, **run)
    np.testing.assert_allclose(vectors(averaged), vectors(plain), rtol=1e-5, atol=1e-6)
    assert set(plain["strand"]) == {"."}
    assert plain.attrs["mambadna"]["strand_handling"].startswith("RC-equivariant")


def test_an_equivariant_model_cannot_stream(records):
    with pytest.raises(ConfigError, match="unidirectional model; this one is RC-equivariant"):
        md.embed(build(rc_equivariant=True), records, window=32, stream=True, device="cpu",
                 progress=False)
