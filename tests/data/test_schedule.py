"""Sequence-length warmup: stage lengths and batch sizes, constant tokens, unreachable targets."""

from __future__ import annotations

import pytest

from mambadna.data.schedule import SeqLenSchedule
from mambadna.errors import ConfigError


def test_stages_double_the_length_and_halve_the_batch():
    schedule = SeqLenSchedule(seq_len=8192, batch_size=2, start_len=1024, stage_steps=100,
                              max_steps=1000)
    stages = schedule.stages
    assert [s.seq_len for s in stages] == [1024, 2048, 4096, 8192]
    assert [s.batch_size for s in stages] == [16, 8, 4, 2]
    assert {s.tokens for s in stages} == {8192 * 2}
    assert [(s.start_step, s.end_step) for s in stages] == [(0, 100), (100, 200), (200, 300),
                                                           (300, None)]
    assert schedule.n_warmup_stages == 3


@pytest.mark.parametrize(("step", "length"), [(0, 1024), (99, 1024), (100, 2048), (299, 4096),
                                              (300, 8192), (10**6, 8192)])
def test_stage_at_step(step, length):
    schedule = SeqLenSchedule(8192, 2, 1024, 100)
    assert schedule.stage_at(step).seq_len == length
    assert schedule.stage_at(step).tokens == 16384


def test_paper_schedule_to_one_million_bases():
    schedule = SeqLenSchedule(2**20, 1, 2**10, 10)
    assert len(schedule.stages) == 11
    assert schedule.stages[0].batch_size == 1024 and schedule.stages[-1].batch_size == 1


def test_without_warmup_there_is_one_stage():
    for start in (None, 512):
        schedule = SeqLenSchedule(512, 4, start)
        assert len(schedule.stages) == 1 and schedule.stage_at(123).batch_size == 4


@pytest.mark.parametrize("target", [3000, 1536, 512])
def test_target_not_reachable_by_doubling(target):
    with pytest.raises(ConfigError, match=r"not reachable.*doubles from 1024"):
        SeqLenSchedule(target, 1, 1024, 10)


def test_warmup_longer_than_training_is_unreachable():
    with pytest.raises(ConfigError, match=r"3 stages x 100 steps = 300 steps.*max-steps is 250"):
        SeqLenSchedule(8192, 1, 1024, 100, max_steps=250)


def test_warmup_needs_stage_steps():
    with pytest.raises(ConfigError, match="at least 1 step"):
        SeqLenSchedule(2048, 1, 1024, 0)
    text = SeqLenSchedule(2048, 1, 1024, 5).describe()
    assert "stage 0: seq_len 1024, batch 2, steps 0-4" in text
