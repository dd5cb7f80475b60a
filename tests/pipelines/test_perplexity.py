"""Bits per base window by window: the windows it scores and the value it reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mambadna.alphabet import encode
from mambadna.errors import ConfigError
from mambadna.model import MambaDNA, ModelConfig, lm_loss
from mambadna.pipelines.perplexity import bits_per_base

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MambaDNA(ModelConfig(d_model=16, n_layer=1)).eval()


def test_bits_per_base_is_the_mean_loss_of_the_same_bases_in_windows(model, tmp_path,
                                                                    write_fasta, random_dna):
    seqs = {"chr1": random_dna(1000, seed=1), "chr2": random_dna(700, seed=2)}
    path = write_fasta(tmp_path / "g.fa", seqs)
    result = bits_per_base(model, [path], 100, bases=500, device="cpu")
    assert result.n_windows == 10 and result.n_predicted == 10 * 99
    windows = torch.tensor(np.stack([encode(s)[i:i + 100] for s in seqs.values()
                                     for i in range(0, 500, 100)])).long()
    with torch.no_grad():
        expected = float(lm_loss(model(windows), windows)) / math.log(2)
    assert result.bits_per_base == pytest.approx(expected, rel=1e-5)
    assert result.perplexity == pytest.approx(2 ** expected, rel=1e-5)
    # Batching does not change the value.
    batched = bits_per_base(model, [path], 100, bases=500, batch_size=4, device="cpu")
    assert batched.bits_per_base == pytest.approx(result.bits_per_base, rel=1e-6)


def test_n_is_not_scored_and_too_short_records_are_an_error(model, tmp_path, write_fasta):
    path = write_fasta(tmp_path / "n.fa", {"chr1": "ACGT" * 10 + "N" * 40})
    result = bits_per_base(model, [path], 80, device="cpu")
    assert result.n_windows == 1 and result.n_predicted == 39
    with pytest.raises(ConfigError, match="no record"):
        bits_per_base(model, [path], 81, device="cpu")
