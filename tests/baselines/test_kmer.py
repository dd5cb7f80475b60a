"""The k-mer naive Bayes baseline: counts checked by hand, a planted motif family it must find
on held-out sequences, strand invariance, fitting from a manifest (all k-mers, sampled windows),
speed on a 1 Mb genome, and saved files (round trip, no pickle, clear errors when corrupt).
Sequences are random DNA made by the tests.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from mambadna.alphabet import encode, reverse_complement
from mambadna.baselines import KmerNaiveBayes, fit_kmer_baseline, kmer_counts
from mambadna.errors import ConfigError, InputError, ModelFileError, OutputExistsError

MOTIF = "ACGTTGCATGCA"


def random_tokens(rng, length: int, gc: float = 0.5) -> np.ndarray:
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return (rng.choice(4, length, p=p) + 5).astype(np.uint8)


def with_motifs(rng, length: int, copies: int) -> np.ndarray:
    """Random DNA with ``copies`` members of the motif family (2 random substitutions each,
    on a random strand) planted at random places."""
    tokens = random_tokens(rng, length)
    motif = encode(MOTIF)
    for _ in range(copies):
        member = motif.copy()
        member[rng.choice(len(member), 2, replace=False)] = rng.integers(5, 9, 2)
        if rng.random() < 0.5:
            member = reverse_complement(member)
        at = int(rng.integers(0, length - len(member)))
        tokens[at:at + len(member)] = member
    return tokens


def dataset(seed: int, n: int, length: int = 400, copies: int = 4):
    rng = np.random.default_rng(seed)
    windows = [random_tokens(rng, length) for _ in range(n)] + \
        [with_motifs(rng, length, copies) for _ in range(n)]
    return windows, ["plain"] * n + ["motif"] * n


def balanced_accuracy(truth, predicted) -> float:
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return float(np.mean([(predicted[truth == x] == x).mean() for x in np.unique(truth)]))


# ------------------------------------------------------------------ counts


def test_counts_both_strands_skip_n_by_hand():
    counts = kmer_counts(encode("ACGTNACGGT"), k=3)
    # Forward ACG CGT | ACG CGG GGT (k-mers across the N skipped); reverse complement of each:
    # CGT ACG | CGT CCG ACC. Codes: A=0 C=1 G=2 T=3, first base most significant.
    code = {"ACG": 6, "CGT": 27, "CGG": 26, "GGT": 43, "CCG": 22, "ACC": 5}
    expected = {"ACG": 3, "CGT": 3, "CGG": 1, "GGT": 1, "CCG": 1, "ACC": 1}
    assert counts.sum() == 10
    assert {kmer: int(counts[c]) for kmer, c in code.items()} == expected
    assert kmer_counts(encode("ACGTNACGGT"), 3).tolist() == \
        kmer_counts(reverse_complement(encode("ACGTNACGGT")), 3).tolist()
    assert kmer_counts(encode("AC"), 3).sum() == 0
    assert kmer_counts(encode("NNNNNN"), 3).sum() == 0


def test_laplace_smoothing_by_hand():
    counts = np.zeros((2, 4))
    counts[0, 0] = 2  # k = 1: A=0 C=1 G=2 T=3
    nb = KmerNaiveBayes(k=1, alpha=1.0).fit_counts(counts, ["x", "y"])
    assert np.allclose(np.exp(nb.log_probs[0]), [3 / 6, 1 / 6, 1 / 6, 1 / 6])
    assert np.allclose(np.exp(nb.log_probs[1]), [1 / 4] * 4)
    # No valid k-mer: uniform probabilities, and the tie goes to the first label.
    assert np.allclose(nb.predict_proba([encode("NN")]), [[0.5, 0.5]])
    assert nb.predict([encode("NN")]).tolist() == ["x"]


# ------------------------------------------------------------------ what it must solve


def test_finds_a_planted_motif_family_on_held_out_sequences():
    train, train_labels = dataset(seed=1, n=200)
    test, test_labels = dataset(seed=2, n=150)
    nb = KmerNaiveBayes(k=6).fit(train, train_labels)
    assert nb.labels == ["plain", "motif"]
    predicted = nb.predict(test)
    assert balanced_accuracy(test_labels, predicted) >= 0.9
    probs = nb.predict_proba(test)
    assert probs.shape == (300, 2) and np.allclose(probs.sum(1), 1)
    # 2-D input gives the same answers as a list of windows.
    assert np.allclose(nb.predict_proba(np.stack(test)), probs)


def test_both_strands_give_the_same_probabilities():
    train, labels = dataset(seed=3, n=50)
    nb = KmerNaiveBayes(k=5).fit(train, labels)
    test, _ = dataset(seed=4, n=20, length=333)
    test += [encode("ACGTNNACGTTTGCAN" * 5), encode("ACG")]
    forward = nb.predict_log_proba(test)
    reverse = nb.predict_log_proba([reverse_complement(w) for w in test])
    np.testing.assert_allclose(forward, reverse, rtol=0, atol=1e-9)


def test_fit_from_a_manifest_all_kmers_and_sampled(tmp_path, write_fasta):
    rng = np.random.default_rng(5)

    def letters(tokens):
        return "".join("ACGT"[t - 5] for t in tokens)

    lines = ["path\tlabel\tsplit"]
    for label, gc in (("low", 0.35), ("high", 0.65)):
        train = {f"chr{i}": letters(random_tokens(rng, 20_000, gc)) for i in (1, 2)}
        test = {"chr3": letters(random_tokens(rng, 5_000, gc))}
        write_fasta(tmp_path / f"{label}.train.fa", train)
        write_fasta(tmp_path / f"{label}.test.fa", test)
        lines += [f"{label}.train.fa\t{label}\ttrain", f"{label}.test.fa\t{label}\ttest"]
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n")

    nb = fit_kmer_baseline(manifest, k=4)
    assert nb.labels == ["low", "high"]
    assert nb.summary["records_per_label"] == {"low": 2, "high": 2}
    assert nb.summary["bases_per_label"] == {"low": 40_000, "high": 40_000}
    assert nb.summary["kmers_per_label"]["low"] == 2 * 2 * (20_000 - 3)  # both strands
    sampled = fit_kmer_baseline(manifest, k=4, window=256, n_windows_per_class=20, seed=0)
    again = fit_kmer_baseline(manifest, k=4, window=256, n_windows_per_class=20, seed=0)
    assert sampled.summary["kmers_per_label"]["low"] == 20 * 2 * (256 - 3)
    np.testing.assert_array_equal(sampled.log_probs, again.log_probs)  # seeded

    rng = np.random.default_rng(6)
    test = [random_tokens(rng, 256, 0.35) for _ in range(30)] + \
        [random_tokens(rng, 256, 0.65) for _ in range(30)]
    truth = ["low"] * 30 + ["high"] * 30
    for model in (nb, sampled):
        assert balanced_accuracy(truth, model.predict(test)) >= 0.95

    with pytest.raises(ConfigError, match="at least 2 labels"):
        fit_kmer_baseline(manifest, split="val")


def test_a_1mb_genome_is_counted_and_scored_in_seconds():
    rng = np.random.default_rng(7)
    genomes = [random_tokens(rng, 1_000_000, gc) for gc in (0.45, 0.55)]
    started = time.perf_counter()
    counts = np.stack([kmer_counts(g, 6) for g in genomes])
    nb = KmerNaiveBayes().fit_counts(counts, ["a", "b"])
    probs = nb.predict_proba(np.stack([g[:999_424] for g in genomes]).reshape(-1, 1024))
    assert time.perf_counter() - started < 5
    assert probs.shape == (2 * 976, 2)
    assert (probs[:976, 0] > 0.5).mean() > 0.9


# ------------------------------------------------------------------ files


@pytest.fixture
def saved(tmp_path):
    train, labels = dataset(seed=8, n=20, length=200)
    nb = KmerNaiveBayes(k=4, alpha=0.5).fit(train, labels)
    return nb, nb.save(tmp_path / "kmer")


def test_save_load_round_trip(saved, tmp_path):
    nb, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["baseline.json", "log_probs.npy"]
    config = json.loads((folder / "baseline.json").read_text())
    assert config["k"] == 4 and config["alpha"] == 0.5 and config["labels"] == nb.labels
    assert config["format"] == "mambadna-kmer-naive-bayes" and "version" in config
    loaded = KmerNaiveBayes.load(folder)
    assert (loaded.k, loaded.alpha, loaded.labels) == (nb.k, nb.alpha, nb.labels)
    np.testing.assert_array_equal(loaded.log_probs, nb.log_probs)
    test, _ = dataset(seed=9, n=5)
    np.testing.assert_array_equal(loaded.predict_proba(test), nb.predict_proba(test))
    with pytest.raises(OutputExistsError, match="already exists"):
        nb.save(folder)
    nb.save(folder, force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder


def _rewrite_config(folder, **changes):
    config = json.loads((folder / "baseline.json").read_text())
    (folder / "baseline.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "log_probs.npy").unlink(), "missing log_probs.npy"),
    (lambda f: (f / "baseline.json").unlink(), "missing baseline.json"),
    (lambda f: (f / "baseline.json").write_text("{not json"), "not valid JSON"),
    (lambda f: _rewrite_config(f, k=5), r"k=5, 2 labels\) needs float64 \(2, 1024\)"),
    (lambda f: _rewrite_config(f, labels=["a", "b", "c"]), r"needs float64 \(3, 256\)"),
    (lambda f: _rewrite_config(f, labels=["a"]), "at least 2 distinct"),
    (lambda f: _rewrite_config(f, format_version=99), "format_version 99"),
    (lambda f: (f / "log_probs.npy").write_bytes((f / "log_probs.npy").read_bytes()[:300]),
     "not a readable numpy array"),
    (lambda f: np.save(f / "log_probs.npy", np.array([[{}]], dtype=object), allow_pickle=True),
     "not a readable numpy array"),
    (lambda f: np.save(f / "log_probs.npy", np.zeros((2, 256))), "corrupt"),
])
def test_damaged_files_give_clear_errors(saved, damage, message):
    _, folder = saved
    damage(folder)
    with pytest.raises(ModelFileError, match=message) as err:
        KmerNaiveBayes.load(folder)
    assert "Fix:" in str(err.value)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="k must be an integer"):
        KmerNaiveBayes(k=0)
    with pytest.raises(ConfigError, match="alpha"):
        KmerNaiveBayes(alpha=0)
    with pytest.raises(ConfigError, match="not fitted"):
        KmerNaiveBayes().predict([encode("ACGT")])
    with pytest.raises(InputError, match="one label per window"):
        KmerNaiveBayes(k=2).fit([encode("ACGT")], ["a", "b"])
    with pytest.raises(InputError, match="list of windows"):
        KmerNaiveBayes(k=2).fit(encode("ACGTACGT"), ["a"])


def test_pickled_objects_never_run(saved, payload):
    _, folder = saved
    np.save(folder / "log_probs.npy", np.array([payload], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFileError, match="not a readable numpy array"):
        KmerNaiveBayes.load(folder)
    (folder / "baseline.json").write_bytes(__import__("pickle").dumps(payload))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        KmerNaiveBayes.load(folder)
    assert not payload.marker.exists()
