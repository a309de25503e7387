"""The winner is measured again head to head: who gets in, in what order, and what is called a tie."""

import itertools
import math

import pytest

from autoscale.confirm import BAND_Z, MAX_FINALISTS, confirm, finalists, noise_band, round_order
from autoscale.engine.request import TrialResult
from autoscale.point import Point
from autoscale.results import TrialRecord


def record(number: int, tokens_per_s: float, step_rse: float = 0.01, *, baseline: bool = False) -> TrialRecord:
    point = Point(micro_batch=number + 1)
    result = TrialResult(status="ok", tokens_per_s=tokens_per_s, step_rse=step_rse, peak_bytes=1, step_s=0.1)
    return TrialRecord(number=number, point=point, status="ok", result=result, is_baseline=baseline)


def test_the_finalists_are_the_best_and_every_trial_whose_interval_overlaps_it_at_most_four():
    records = [record(0, 100.0), record(1, 97.0, 0.01), record(2, 90.0, 0.01), record(3, 95.0, 0.05),
               record(4, 99.0), record(5, 98.5), record(6, 98.0)]
    chosen = finalists(records, usable_bytes=None)
    assert chosen[0].number == 0 and len(chosen) == MAX_FINALISTS
    assert 2 not in {r.number for r in chosen}  # 90 +- 2% cannot reach 100 - 2%


def test_rounds_alternate_forwards_and_backwards():
    assert [round_order(3, r) for r in range(3)] == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]


def measured(samples: dict[int, list[float]]):
    """A stand-in engine: each record's next sample, in the order the rounds ask for them."""
    queues = {number: iter(values) for number, values in samples.items()}
    order = []

    def measure(trial: TrialRecord, round_index: int) -> TrialResult:
        order.append(trial.number)
        return TrialResult(status="ok", tokens_per_s=next(queues[trial.number]), peak_bytes=1)

    return measure, order


def test_a_clear_winner_is_ahead_of_the_runner_up_with_an_interval_above_one():
    a, b, base = record(0, 100.0), record(1, 99.0), record(2, 50.0, baseline=True)
    measure, order = measured({0: [110, 112, 111, 109], 1: [100, 101, 99, 100], 2: [50, 51, 50, 49]})
    result = confirm([a, b], base, rounds=4, measure=measure)
    assert order == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0]
    assert result.winner.trial_number == 0 and not result.tied
    assert 1.0 < result.vs_runner_up.low < result.vs_runner_up.centre < result.vs_runner_up.high
    assert 2.0 < result.vs_baseline.centre < 2.4


def test_the_first_trial_can_lose_the_confirmation_and_noise_makes_a_tie():
    a, b = record(0, 120.0), record(1, 100.0)  # the first trial of 0 was a lucky one
    measure, _ = measured({0: [100, 104, 97, 101], 1: [101, 99, 103, 100]})
    result = confirm([a, b], None, rounds=4, measure=measure)
    assert result.tied and result.vs_baseline is None
    assert set(itertools.chain(*(c.samples for c in result.contenders))) == {100, 104, 97, 101, 99, 103}


def test_a_failed_round_is_left_out_of_the_samples():
    a, b = record(0, 100.0), record(1, 99.0)
    results = iter([110, None, 111, 100, 112, 101])

    def measure(trial, round_index):
        value = next(results)
        return TrialResult(status="ok", tokens_per_s=value) if value else TrialResult.failed("crash: x")

    result = confirm([a, b], None, rounds=3, measure=measure)
    assert [len(c.samples) for c in result.contenders] == [3, 2]


def test_the_two_fastest_are_finalists_even_when_their_intervals_do_not_overlap():
    chosen = finalists([record(0, 100.0, 0.001), record(1, 50.0, 0.001), record(2, 10.0, 0.001)], usable_bytes=None)
    assert [r.number for r in chosen] == [0, 1]


def test_the_band_pools_how_far_each_config_moved_between_its_launches():
    assert noise_band([[100.0], [50.0]], "x") is None  # nothing launched twice
    steady = noise_band([[100.0, 100.0], [50.0, 50.0]], "x")
    assert steady.ratio == 1.0 and steady.launches == 4 and steady.configs == 2
    moving = noise_band([[100.0, 80.0], [50.0, 50.0]], "x")
    log_sd = math.log(100 / 80) / math.sqrt(2) / math.sqrt(2)  # one pair's squares over two degrees of freedom
    assert moving.log_sd == pytest.approx(log_sd)
    assert moving.ratio == pytest.approx(math.exp(BAND_Z * math.sqrt(2) * log_sd))
    assert moving.within(90.0, 100.0) and not moving.within(70.0, 100.0)


def test_a_trial_within_the_measured_band_of_the_fastest_joins_after_the_first_round():
    a, b, base = record(0, 100.0), record(1, 98.0), record(2, 50.0, baseline=True)
    near, far = record(3, 90.0), record(4, 60.0)
    measure, order = measured({0: [80, 101, 99], 1: [96, 97, 98], 2: [50, 51, 50], 3: [95, 96]})
    result = confirm([a, b], base, rounds=3, measure=measure, others=[near, far])
    assert result.joined == (3,) and 4 not in order  # a moved 20% between launches: 90 is within, 60 is not
    assert order == [0, 1, 2, 3, 2, 1, 0, 0, 1, 2, 3]
    assert {c.trial_number: len(c.samples) for c in result.contenders} == {0: 3, 1: 3, 3: 2}
    assert result.band.configs == 3 and result.band_after.launches == 4 + 4 + 4 + 3


def test_a_trial_within_the_band_past_the_cap_is_named_as_left_out():
    contenders = [record(n, 100.0 - n) for n in range(MAX_FINALISTS)]
    extra = record(MAX_FINALISTS, 95.0)
    measure, order = measured({n: [80, 100, 90] for n in range(MAX_FINALISTS)})
    result = confirm(contenders, None, rounds=3, measure=measure, others=[extra])
    assert result.joined == () and result.left_out == (MAX_FINALISTS,) and MAX_FINALISTS not in order
