"""Held-out splits, random windows (length-weighted, N-skipping, reverse complement), tiles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mambadna.alphabet import A, C, G, N, T, reverse_complement
from mambadna.data.sampling import (
    Span,
    TokenSource,
    WindowSampler,
    holdout_split,
    tile_windows,
    whole_records,
)
from mambadna.errors import ConfigError, InputError

BASES = np.array([A, C, G, T], dtype=np.uint8)


def random_tokens(rng: np.random.Generator, n: int) -> np.ndarray:
    return BASES[rng.integers(0, 4, n)]


def source_of(lengths, seed=0, source="<memory>") -> TokenSource:
    rng = np.random.default_rng(seed)
    return TokenSource.from_arrays(((f"chr{i + 1}", random_tokens(rng, n))
                                    for i, n in enumerate(lengths)), source=source)


def locate(window: np.ndarray, source: TokenSource) -> tuple[int, int]:
    """(record, offset) of a window inside the source (records are random: unique hits)."""
    for i in range(len(source)):
        at = source.tokens(i).tobytes().find(window.tobytes())
        if at >= 0:
            return i, at
    raise AssertionError("window not found in any record")


def covered(spans) -> set[tuple[int, int]]:
    return {(s.record, p) for s in spans for p in range(s.start, s.end)}


# --- splits -------------------------------------------------------------------------------------

def test_several_records_hold_out_whole_last_records():
    source = source_of([1000] * 19 + [1000])
    split = holdout_split(source, val_fraction=0.05)
    assert split.rule == "records"
    assert [s.record for s in split.val] == [19]
    assert all(s.start == 0 and s.end == 1000 for s in split.train + split.val)
    assert split.describe(source)["val"] == ["<memory>:chr20"]


def test_single_record_holds_out_its_end_region_without_overlap():
    source = source_of([10_000])
    split = holdout_split(source, val_fraction=0.05)
    assert split.rule == "regions"
    assert split.train == [Span(0, 0, 9500)] and split.val == [Span(0, 9500, 10_000)]
    assert split.describe(source)["val"] == ["<memory>:chr1:9501-10000"]


def test_uneven_records_fall_back_to_regions():
    """Two equal chromosomes: holding one out would take half the data, not 10%."""
    split = holdout_split(source_of([5000, 5000]), val_fraction=0.1)
    assert split.rule == "regions"
    assert not covered(split.train) & covered(split.val)
    assert len(covered(split.train) | covered(split.val)) == 10_000


def test_split_is_per_file_and_zero_fraction_keeps_everything():
    a, b = source_of([100] * 10, seed=1), source_of([800], seed=2)
    both = TokenSource([*a.names, *b.names], ["a.fa"] * 10 + ["b.fa"], [*a.lengths, *b.lengths],
                       arrays=[a.tokens(i) for i in range(10)] + [b.tokens(0)])
    split = holdout_split(both, val_fraction=0.1)
    assert split.rule == "mixed"
    assert Span(9, 0, 100) in split.val and Span(10, 720, 800) in split.val
    assert holdout_split(both, val_fraction=0).val == []


# --- random windows -----------------------------------------------------------------------------

def test_windows_stay_inside_their_spans_and_are_deterministic():
    source = source_of([3000, 2000])
    spans = [Span(0, 0, 1500), Span(1, 500, 2000)]
    sampler = WindowSampler(source, spans, max_n_fraction=0.1)
    rng = np.random.default_rng(7)
    for _ in range(200):
        record, at = locate(sampler.sample(rng, 100), source)
        span = spans[record]
        assert span.start <= at and at + 100 <= span.end
    again = [WindowSampler(source, spans).sample(np.random.default_rng(3), 50) for _ in range(2)]
    assert np.array_equal(*again)


def test_records_are_drawn_proportionally_to_their_length():
    source = source_of([1000, 3000])
    sampler = WindowSampler(source, whole_records(source))
    rng = np.random.default_rng(0)
    picks = [locate(sampler.sample(rng, 20), source)[0] for _ in range(2000)]
    assert np.mean(picks) == pytest.approx(0.75, abs=0.03)


def test_windows_with_too_many_n_are_skipped():
    source = source_of([4000])
    tokens = source.tokens(0)
    tokens[:2000] = N  # first half is an assembly gap
    sampler = WindowSampler(source, whole_records(source), max_n_fraction=0.1)
    rng = np.random.default_rng(1)
    windows = [sampler.sample(rng, 200) for _ in range(300)]
    assert max(np.count_nonzero(w == N) for w in windows) <= 20


def test_only_n_is_an_error_naming_the_fix():
    source = TokenSource.from_arrays([("gap", np.full(500, N, dtype=np.uint8))])
    sampler = WindowSampler(source, whole_records(source), what="genome.fa")
    with pytest.raises(InputError, match=r"genome\.fa.*N.*max-n-fraction"):
        sampler.sample(np.random.default_rng(0), 100)


def test_reverse_complement_augmentation():
    source = source_of([1000])
    rng = np.random.default_rng(2)
    window = WindowSampler(source, whole_records(source), rc_prob=1.0).sample(rng, 64)
    record, at = locate(reverse_complement(window), source)
    assert record == 0 and at >= 0
    half = WindowSampler(source, whole_records(source), rc_prob=0.5)
    flipped = 0
    for _ in range(400):
        w = half.sample(rng, 64)
        flipped += source.tokens(0).tobytes().find(w.tobytes()) < 0
    assert 150 < flipped < 250


def test_window_longer_than_every_sequence_is_a_config_error():
    source = source_of([300, 200])
    with pytest.raises(ConfigError, match=r"long enough.*400.*longest is 300"):
        WindowSampler(source, whole_records(source)).check(400)


# --- evaluation tiles ---------------------------------------------------------------------------

def test_tiles_do_not_overlap_skip_n_and_are_capped():
    source = source_of([2000, 1000])
    source.tokens(1)[:] = N
    spans = whole_records(source)
    tiles = tile_windows(source, spans, 100, max_windows=100, max_n_fraction=0.1)
    assert len(tiles) == 20 and all(record == 0 for record, _ in tiles)
    starts = sorted(start for _, start in tiles)
    assert all(b - a >= 100 for a, b in itertools.pairwise(starts))
    few = tile_windows(source, spans, 100, max_windows=4)
    assert len(few) == 4 and few[0] == (0, 0)
    assert tile_windows(source, [Span(0, 0, 50)], 100, max_windows=4) == []


def test_store_backed_source_reopens_after_pickling(tmp_path):
    import pickle

    from mambadna.data.store import write_token_store

    fasta = tmp_path / "g.fa"
    fasta.write_text(">a\nACGTACGTAC\n>b\nGGGG\n")
    source = TokenSource.from_store(write_token_store([fasta], tmp_path / "store"))
    assert source.tokens(0)[:4].tolist() == [A, C, G, T]
    clone = pickle.loads(pickle.dumps(source))
    assert clone._store is None and clone.tokens(1).tolist() == [G] * 4
    assert source.label(1).endswith("g.fa:b")
