"""A k-mer naive Bayes classifier: the baseline every sequence model is compared with.

Torch-free and vectorised with numpy. A sequence is reduced to the counts of its k-mers
(default k = 6, 4^k = 4096 features); each class is a multinomial over k-mers estimated from its
training counts with Laplace smoothing (``alpha``, default 1)::

    log p(kmer | class) = log (count[class, kmer] + alpha) - log (total[class] + alpha * 4^k)

Choices, and why:

- Both strands. A k-mer and its reverse complement are the same DNA read from the other strand,
  and which strand a FASTA record happens to be written on carries no label. Training counts
  every k-mer of a sequence and of its reverse complement; a sequence is scored by the mean of
  the log-likelihoods of its two strands (as ``classify --rc-average`` averages strands). Since
  the class log-probabilities are then symmetric under reverse complement, a sequence and its
  reverse complement get exactly the same scores. (Canonical k-mers would give the same
  invariance; counting both strands keeps one feature per k-mer and treats palindromes like any
  other k-mer.)
- k-mers holding an N (or any non-ACGT token) are skipped, in training and in scoring.
- Uniform class prior: finetuning draws labels uniformly and evaluation reports balanced
  accuracy, so the baseline is not told which class is more frequent either.
- Training data: by default ALL k-mers of the train records of each class (``fit_kmer_baseline``).
  For naive Bayes the counts are sufficient statistics, so counting everything is both the
  best estimate and deterministic, and it is cheap (a 1 Mb genome takes well under a second).
  ``n_windows_per_class`` instead samples windows the way finetuning does (WindowSampler:
  record by length, uniform offset) for a like-for-like comparison with a model that saw only
  so many windows.
- A sequence without any valid k-mer (shorter than k, or all N) scores 0 for every class:
  uniform probabilities, and ``predict`` answers the first label (ties go to the first label
  in ``labels`` order, as numpy's argmax does).

Saved as a folder without pickle: ``baseline.json`` (format, version, k, alpha, labels, prior,
training summary) and ``log_probs.npy`` (float64, shape (len(labels), 4^k), read with
``allow_pickle=False`` and checked against the JSON).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from mambadna._version import __version__
from mambadna.alphabet import A, T
from mambadna.atomic import atomic_directory
from mambadna.errors import ConfigError, InputError, ModelFileError, OutputExistsError

FORMAT = "mambadna-kmer-naive-bayes"
FORMAT_VERSION = 1
CONFIG_FILE = "baseline.json"
WEIGHTS_FILE = "log_probs.npy"
MAX_K = 12
"""4^12 = 16.7 M features per class: beyond that the table, not the data, dominates memory."""
CHUNK = 1 << 22
"""k-mer positions handled per numpy pass (bounds the temporary arrays to ~100 MB)."""

Windows = np.ndarray | Sequence[np.ndarray]
"""A 2-D uint8 array (n, L) of token ids, or a sequence of 1-D uint8 arrays of any lengths."""


# ------------------------------------------------------------------ k-mer codes


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be an integer from 1 to {MAX_K}, got {k!r}",
                          fix="use --k 6 (the default) or another small k")
    return int(k)


def _kmer_codes(flat: np.ndarray, k: int, begin: int, end: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-mers starting at positions [begin, end) of ``flat``: (positions, forward codes,
    reverse-complement codes) of those without a non-ACGT token; codes are 2 bits per base
    (A=0 C=1 G=2 T=3), first base most significant."""
    piece = np.asarray(flat[begin:end + k - 1])
    valid = (piece >= A) & (piece <= T)
    bases = np.where(valid, piece - A, 0).astype(np.int32)
    m = len(piece) - k + 1
    forward = np.zeros(m, dtype=np.int32)
    reverse = np.zeros(m, dtype=np.int32)
    for j in range(k):
        forward = (forward << 2) | bases[j:j + m]
        # The reverse complement reads the complements (3 - b) from the last base back.
        reverse |= (3 - bases[j:j + m]) << (2 * j)
    invalid = np.concatenate([[0], np.cumsum(~valid, dtype=np.int64)])
    ok = invalid[k:] == invalid[:-k]
    positions = np.flatnonzero(ok) + begin
    return positions, forward[ok], reverse[ok]


def _iter_codes(flat: np.ndarray, k: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``_kmer_codes`` over all of ``flat`` in chunks of CHUNK start positions."""
    n_starts = len(flat) - k + 1
    for begin in range(0, max(n_starts, 0), CHUNK):
        yield _kmer_codes(flat, k, begin, min(begin + CHUNK, n_starts))


def kmer_counts(tokens: np.ndarray, k: int = 6) -> np.ndarray:
    """Counts of the k-mers of ``tokens`` (1-D uint8 token ids) AND of its reverse complement.

    Returns int64 (4^k,), indexed by the 2-bit code (A=0 C=1 G=2 T=3, first base most
    significant); k-mers with N or other non-ACGT tokens are skipped. The result is the same
    for a sequence and its reverse complement.
    """
    k = _check_k(k)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise InputError(f"kmer_counts expects one 1-D token array, got shape {tokens.shape}")
    counts = np.zeros(4 ** k, dtype=np.int64)
    for _, forward, reverse in _iter_codes(tokens, k):
        counts += np.bincount(forward, minlength=4 ** k)
        counts += np.bincount(reverse, minlength=4 ** k)
    return counts


def _flatten(windows: Windows) -> tuple[np.ndarray, np.ndarray]:
    """Windows joined by one N each (so no k-mer spans two windows) and their end offsets."""
    if isinstance(windows, np.ndarray) and windows.ndim == 2:
        n, length = windows.shape
        flat = np.full((n, length + 1), 9, dtype=np.uint8)  # 9 = N, the separator
        flat[:, :length] = windows
        return flat.reshape(-1), (np.arange(1, n + 1, dtype=np.int64) * (length + 1))
    if isinstance(windows, np.ndarray) and windows.ndim == 1 and windows.dtype != object:
        raise InputError("got one 1-D token array where a list of windows was expected",
                         fix="pass [tokens] for a single sequence, or a 2-D (n, L) array")
    arrays = [np.asarray(w) for w in windows]
    for i, w in enumerate(arrays):
        if w.ndim != 1:
            raise InputError(f"window {i} has shape {w.shape}; windows are 1-D token arrays")
    sep = np.full(1, 9, dtype=np.uint8)
    flat = np.concatenate([np.concatenate([w.astype(np.uint8, copy=False), sep])
                           for w in arrays]) if arrays else np.zeros(0, dtype=np.uint8)
    return flat, np.cumsum([len(w) + 1 for w in arrays], dtype=np.int64)


# ------------------------------------------------------------------ the classifier


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class KmerNaiveBayes:
    """Multinomial naive Bayes on both-strand k-mer counts (see the module docstring).

    After ``fit`` / ``fit_counts`` / ``load``: ``labels`` (class names, in the order of the
    probability columns), ``log_probs`` (float64 (n_labels, 4^k)) and ``summary`` (a
    JSON-ready description of the training data).
    """

    def __init__(self, k: int = 6, alpha: float = 1.0) -> None:
        self.k = _check_k(k)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) \
                or not math.isfinite(alpha) or alpha <= 0:
            raise ConfigError(f"alpha (Laplace smoothing) must be a positive number, got "
                              f"{alpha!r}", fix="use alpha=1.0 (add-one smoothing)")
        self.alpha = float(alpha)
        self.labels: list[str] = []
        self.log_probs: np.ndarray | None = None
        self.summary: dict = {}

    def __repr__(self) -> str:
        return f"KmerNaiveBayes(k={self.k}, alpha={self.alpha}, labels={self.labels})"

    # -------------------------------------------------------------- training

    def fit_counts(self, counts: np.ndarray, labels: Sequence[str],
                   summary: dict | None = None) -> KmerNaiveBayes:
        """Estimate the class k-mer distributions from counts (n_labels, 4^k), one row per
        label (as ``kmer_counts`` returns them, both strands)."""
        counts = np.asarray(counts, dtype=np.float64)
        labels = [str(x) for x in labels]
        if counts.shape != (len(labels), 4 ** self.k):
            raise InputError(f"counts have shape {counts.shape}, expected (labels, 4^k) = "
                             f"({len(labels)}, {4 ** self.k})")
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise InputError(f"a classifier needs at least 2 distinct labels, got {labels}")
        if (counts < 0).any() or not np.isfinite(counts).all():
            raise InputError("k-mer counts must be finite and non-negative")
        smoothed = counts + self.alpha
        self.log_probs = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        self.labels = labels
        totals = counts.sum(axis=1)
        self.summary = {**(summary or {}),
                        "kmers_per_label": {x: int(t) for x, t in zip(labels, totals)}}
        return self

    def fit(self, windows: Windows, labels: Sequence[str],
            classes: Sequence[str] | None = None) -> KmerNaiveBayes:
        """Fit on training sequences and their labels (one per window).

        classes: the label order of the probability columns; default: order of first
        appearance in ``labels``.
        """
        labels = [str(x) for x in labels]
        flat, ends = _flatten(windows)
        if len(ends) != len(labels):
            raise InputError(f"{len(ends)} windows but {len(labels)} labels; give one label "
                             "per window")
        order = list(dict.fromkeys(labels)) if classes is None else [str(c) for c in classes]
        missing = sorted(set(labels) - set(order))
        if missing:
            raise InputError(f"labels {missing} are not among classes {order}")
        row_class = np.array([order.index(x) for x in labels], dtype=np.int64)
        counts = np.zeros((len(order), 4 ** self.k), dtype=np.int64)
        size = 4 ** self.k
        for positions, forward, reverse in _iter_codes(flat, self.k):
            cls = row_class[np.searchsorted(ends, positions, side="right")] * size
            counts += np.bincount(np.concatenate([cls + forward, cls + reverse]),
                                  minlength=len(order) * size).reshape(len(order), size)
        return self.fit_counts(counts, order, {"windows": len(labels),
                                               "bases": int(len(flat) - len(ends))})

    # -------------------------------------------------------------- prediction

    def _fitted(self) -> np.ndarray:
        if self.log_probs is None:
            raise ConfigError("the k-mer baseline is not fitted",
                              fix="call fit / fit_counts first, or KmerNaiveBayes.load(dir)")
        return self.log_probs

    def log_likelihood(self, windows: Windows) -> np.ndarray:
        """(n, n_labels) float64: per window, the mean over its two strands of the sum of
        its k-mers' class log-probabilities."""
        log_probs = self._fitted()
        flat, ends = _flatten(windows)
        scores = np.zeros((len(ends), len(self.labels)))
        for positions, forward, reverse in _iter_codes(flat, self.k):
            rows = np.searchsorted(ends, positions, side="right")
            for c in range(len(self.labels)):
                weights = 0.5 * (log_probs[c, forward] + log_probs[c, reverse])
                scores[:, c] += np.bincount(rows, weights=weights, minlength=len(ends))
        return scores

    def predict_log_proba(self, windows: Windows) -> np.ndarray:
        """(n, n_labels) float64 class log-posteriors (uniform prior)."""
        scores = self.log_likelihood(windows)
        return _log_softmax(scores) if len(scores) else scores

    def predict_proba(self, windows: Windows) -> np.ndarray:
        """(n, n_labels) float64 class probabilities, columns in ``labels`` order."""
        return np.exp(self.predict_log_proba(windows))

    def predict(self, windows: Windows) -> np.ndarray:
        """(n,) object array of predicted labels (ties: the first label in ``labels``)."""
        scores = self.log_likelihood(windows)
        return np.array(self.labels, dtype=object)[scores.argmax(axis=1)] if len(scores) \
            else np.array([], dtype=object)

    # -------------------------------------------------------------- files

    def config(self) -> dict:
        """What ``baseline.json`` holds."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
                "k": self.k, "alpha": self.alpha, "labels": self.labels, "prior": "uniform",
                "strands": "both (mean log-likelihood of a sequence and its reverse "
                           "complement)",
                "weights": WEIGHTS_FILE, "summary": self.summary}

    def save(self, directory: str | os.PathLike, *, force: bool = False) -> Path:
        """Write ``baseline.json`` and ``log_probs.npy`` into ``directory`` (created; an
        existing folder needs ``force``). Written to a temporary folder, then renamed."""
        log_probs = self._fitted()
        directory = Path(directory)

        def check(target: Path) -> None:
            if target.exists() and not force:
                raise OutputExistsError("output folder already exists", path=target,
                                        fix="pass --force (Python: force=True) or choose another")

        with atomic_directory(directory, check=check) as tmp:
            np.save(tmp / WEIGHTS_FILE, log_probs, allow_pickle=False)
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> KmerNaiveBayes:
        """Read a saved baseline; ModelFileError naming the file and what is wrong."""
        directory = Path(directory)
        config = _read_config(directory)
        model = cls(k=config["k"], alpha=config["alpha"])
        model.labels = config["labels"]
        model.summary = config.get("summary") or {}
        model.log_probs = _read_weights(directory / WEIGHTS_FILE, len(model.labels), model.k)
        return model


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    fix = "re-create it with `mambadna baseline fit` (or KmerNaiveBayes.save)"
    if not directory.is_dir():
        raise ModelFileError("k-mer baseline folder not found", path=directory, fix=fix)
    if not path.is_file():
        raise ModelFileError(f"missing {CONFIG_FILE}; not a saved k-mer baseline",
                             path=directory, fix=fix)
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"not valid JSON ({err})", path=path, fix=fix) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"not a k-mer baseline file (format should be {FORMAT!r})",
                             path=path, fix=fix)
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"format_version {config.get('format_version')!r}; this mambadna "
                             f"reads version {FORMAT_VERSION}", path=path,
                             fix="fit the baseline again with this version")
    labels = config.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 \
            or not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels):
        raise ModelFileError(f"'labels' must list at least 2 distinct names, got {labels!r}",
                             path=path, fix=fix)
    try:
        _check_k(config.get("k"))
        KmerNaiveBayes(alpha=config.get("alpha"))
    except ConfigError as err:
        raise ModelFileError(err.message, path=path, fix=fix) from None
    return config


def _read_weights(path: Path, n_labels: int, k: int) -> np.ndarray:
    fix = "re-create the folder with `mambadna baseline fit`"
    if not path.is_file():
        raise ModelFileError(f"missing {WEIGHTS_FILE}", path=path.parent, fix=fix)
    try:
        log_probs = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ModelFileError(f"not a readable numpy array ({err})", path=path, fix=fix) from None
    expected = (n_labels, 4 ** k)
    if log_probs.dtype != np.float64 or log_probs.shape != expected:
        raise ModelFileError(f"holds {log_probs.dtype} {log_probs.shape}; {CONFIG_FILE} "
                             f"(k={k}, {n_labels} labels) needs float64 {expected}", path=path,
                             fix=fix)
    # Each row is a distribution over k-mers: its probabilities must sum to 1.
    with np.errstate(over="ignore", invalid="ignore"):
        sums = np.exp(log_probs).sum(axis=1)
    if not np.isfinite(log_probs).all() or not np.allclose(sums, 1.0, atol=1e-6):
        raise ModelFileError("the log-probabilities are not finite distributions "
                             "(rows must sum to 1): the file is corrupt", path=path, fix=fix)
    return log_probs


# ------------------------------------------------------------------ from a manifest


def _train_rows(manifest: str | os.PathLike, split: str):
    from mambadna.manifests.labelled import labels_in_order, read_manifest

    rows = [replace(r, split="train") for r in read_manifest(manifest) if r.split == split]
    labels = labels_in_order(rows)
    if len(labels) < 2:
        raise ConfigError(f"the k-mer baseline needs {split} rows of at least 2 labels, found "
                          f"{len(labels)} ({', '.join(labels) or 'none'})", path=manifest,
                          fix=f"add {split} rows (path<TAB>label<TAB>{split}) for each class")
    return rows, labels


def _sampled_counts(rows, labels, manifest, k: int, window: int, n_windows: int,
                    seed: int, read_opts: dict) -> np.ndarray:
    """Counts of ``n_windows`` windows per class, drawn as finetuning draws them."""
    from mambadna.data.prepare import species_data
    from mambadna.data.sampling import TokenSource, WindowSampler
    from mambadna.io import read_tokens

    names, sources, arrays = [], [], []
    for row in rows:
        for name, _, tokens in read_tokens(row.path, **read_opts):
            names.append(name)
            sources.append(os.fspath(row.path))
            arrays.append(tokens)
    source = TokenSource(names, sources, [len(a) for a in arrays], arrays=arrays)
    data = species_data(rows, source, manifest, val_fraction=0.0)
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(labels), 4 ** k), dtype=np.int64)
    for c, spans in enumerate(data.train):
        sampler = WindowSampler(source, spans, what=f"the train records of {labels[c]!r}")
        for _ in range(n_windows):
            counts[c] += kmer_counts(sampler.sample(rng, window), k)
    return counts


def fit_kmer_baseline(manifest: str | os.PathLike, *, k: int = 6, alpha: float = 1.0,
                      split: str = "train", window: int = 1024,
                      n_windows_per_class: int | None = None, seed: int = 0,
                      **read_opts) -> KmerNaiveBayes:
    """Fit the k-mer baseline on the ``split`` rows of a finetuning manifest (path, label,
    split).

    By default every k-mer of every record of those rows is counted, per label (deterministic;
    records are read one at a time, so memory does not grow with the genome). With
    ``n_windows_per_class``, that many windows of ``window`` bases are drawn per label as
    finetuning draws them (record by length, uniform offset, at most 10% N; seeded), which
    holds the rows' records in memory. Labels are ordered as finetuning orders them (first
    appearance). read_opts go to ``mambadna.io.read_tokens``.
    """
    from mambadna.io import read_tokens

    k = _check_k(k)
    rows, labels = _train_rows(manifest, split)
    model = KmerNaiveBayes(k=k, alpha=alpha)
    summary: dict = {"manifest": os.fspath(manifest), "split": split,
                     "files": [os.fspath(r.path) for r in rows]}
    if n_windows_per_class is None:
        counts = np.zeros((len(labels), 4 ** k), dtype=np.int64)
        records = dict.fromkeys(labels, 0)
        bases = dict.fromkeys(labels, 0)
        for row in rows:
            for _, _, tokens in read_tokens(row.path, **read_opts):
                counts[labels.index(row.label)] += kmer_counts(tokens, k)
                records[row.label] += 1
                bases[row.label] += len(tokens)
        summary.update(training="all k-mers of the records", records_per_label=records,
                       bases_per_label=bases)
    else:
        if n_windows_per_class < 1 or window < k:
            raise ConfigError(f"n_windows_per_class must be >= 1 and window >= k, got "
                              f"{n_windows_per_class} and {window}")
        counts = _sampled_counts(rows, labels, manifest, k, window, n_windows_per_class,
                                 seed, read_opts)
        summary.update(training="sampled windows", window=window,
                       windows_per_label=n_windows_per_class, seed=seed)
    empty = [x for x, row in zip(labels, counts) if not row.any()]
    if empty:
        raise InputError(f"no valid {k}-mer in the {split} records of {', '.join(empty)}",
                         path=manifest, fix="check those files (all N, or shorter than k?)")
    return model.fit_counts(counts, labels, summary)
