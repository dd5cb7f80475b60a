"""--rc-equivariant through the CLI: pretrain, finetune --from, classify and embed the saved
models; the classifier's calls and the embeddings are the same on either strand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mambadna.alphabet import reverse_complement_str
from mambadna.cli import cli
from mambadna.model import load_model

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # 2-7 s: CLI runs


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_pretrain_finetune_classify_embed_an_equivariant_model(tmp_path, random_dna):
    rows = ["path\tlabel\tsplit"]
    for k, (label, alphabet) in enumerate({"at": "AATTACGT", "gc": "GGCCACGT"}.items()):
        for split in ("train", "val"):
            path = tmp_path / f"{label}.{split}.fa"
            path.write_text(f">{label}{split}\n{random_dna(3000, seed=k, alphabet=alphabet)}\n")
            rows.append(f"{path.name}\t{label}\t{split}")
    (tmp_path / "manifest.tsv").write_text("\n".join(rows) + "\n")
    common = ["--seq-len", 64, "--batch-size", 4, "--max-steps", 4, "--val-every", 2,
              "--val-windows", 4, "--num-workers", 0, "--preset", "tiny"]
    run("pretrain", "--genome", tmp_path / "at.train.fa", "-o", tmp_path / "pre",
        "--rc-equivariant", *common)
    pretrained = load_model(tmp_path / "pre" / "model")
    assert pretrained.config.rc_equivariant
    run("finetune", "--manifest", tmp_path / "manifest.tsv", "--from", tmp_path / "pre" / "model",
        "-o", tmp_path / "fine", *common[:-2])
    model_dir = tmp_path / "fine" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["rc_equivariant"] is True and config["num_labels"] == 2

    seqs = {"s1": random_dna(150, seed=7), "s2": random_dna(120, seed=8, alphabet="GGCCAT")}
    (tmp_path / "fwd.fa").write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    (tmp_path / "rev.fa").write_text("".join(f">{k}\n{reverse_complement_str(v)}\n"
                                             for k, v in seqs.items()))
    for strand in ("fwd", "rev"):
        run("classify", "--model", model_dir, tmp_path / f"{strand}.fa", "-o",
            tmp_path / f"{strand}.tsv", "--window", 200, "--device", "cpu", "--quiet")
        run("embed", "--model", model_dir, tmp_path / f"{strand}.fa", "-o",
            tmp_path / f"{strand}.parquet", "--window", 200, "--device", "cpu", "--quiet")
    forward = pd.read_csv(tmp_path / "fwd.tsv", sep="\t")
    backward = pd.read_csv(tmp_path / "rev.tsv", sep="\t")
    np.testing.assert_allclose(forward.filter(like="prob_"), backward.filter(like="prob_"),
                               atol=1e-5)
    vectors = [np.stack(pd.read_parquet(tmp_path / f"{s}.parquet")["embedding"])
               for s in ("fwd", "rev")]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    assert vectors[0].shape == (2, 64)  # d_model wide, whatever the strands
