"""The regression rule on synthetic samples: a change must pass the threshold and be significant."""

import warnings

import numpy as np
import pytest

from autoscale.bench.stats import IMPROVED, NOT_COMPARABLE, REGRESSED, UNCHANGED, compare_samples

STEP_S = 0.1  # any scale: the rule only sees ratios


def noisy(center: float, relative_spread: float, n: int = 5, seed: int = 0) -> list[float]:
    """Log-normal: timings are positive and their noise multiplicative."""
    return list(center * np.exp(relative_spread * np.random.default_rng(seed).standard_normal(n)))


def test_identical_samples_are_unchanged_with_ratio_one():
    samples = noisy(STEP_S, 0.02)
    result = compare_samples(samples, samples, higher_is_better=False, threshold=0.05)
    assert result.verdict == UNCHANGED and result.ratio == 1.0
    assert result.ci_low <= 1.0 <= result.ci_high and result.p_value > 0.5


def test_thirty_percent_slower_with_tight_spread_is_a_regression():
    base, slow = noisy(STEP_S, 0.01, seed=1), noisy(1.3 * STEP_S, 0.01, seed=2)
    result = compare_samples(base, slow, higher_is_better=False, threshold=0.05)
    assert result.verdict == REGRESSED
    assert result.ci_low > 1.05 and result.ci_low <= result.ratio <= result.ci_high and result.p_value < 0.05


def test_lower_throughput_is_a_regression_of_a_higher_is_better_metric():
    base, slow = noisy(1000.0, 0.01, seed=1), noisy(1000.0 / 1.3, 0.01, seed=2)
    assert compare_samples(base, slow, higher_is_better=True, threshold=0.05).verdict == REGRESSED
    assert compare_samples(slow, base, higher_is_better=True, threshold=0.05).verdict == IMPROVED


def test_a_speed_up_is_reported_as_an_improvement():
    base, fast = noisy(STEP_S, 0.01, seed=3), noisy(0.7 * STEP_S, 0.01, seed=4)
    result = compare_samples(base, fast, higher_is_better=False, threshold=0.05)
    assert result.verdict == IMPROVED and result.ci_high < 1 / 1.05


def test_a_large_shift_inside_big_noise_is_not_significant():
    base, shifted = noisy(STEP_S, 0.4, seed=5), noisy(1.3 * STEP_S, 0.4, seed=6)
    result = compare_samples(base, shifted, higher_is_better=False, threshold=0.05)
    assert result.verdict == UNCHANGED
    assert result.ci_low < 1.05 < result.ci_high  # the interval straddles the threshold


def test_a_significant_change_below_the_threshold_is_not_flagged():
    base, slightly = noisy(STEP_S, 0.001, seed=7), noisy(1.02 * STEP_S, 0.001, seed=8)
    result = compare_samples(base, slightly, higher_is_better=False, threshold=0.05)
    assert result.p_value < 0.05 and result.verdict == UNCHANGED


def test_zero_variance_memory_gives_an_exact_ratio_and_a_degenerate_interval():
    peak = 490_000_000.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no degenerate-data warning
        same = compare_samples([peak] * 5, [peak] * 5, higher_is_better=False, threshold=0.05)
        grown = compare_samples([peak] * 5, [1.3 * peak] * 5, higher_is_better=False, threshold=0.05)
    assert (same.ratio, same.ci_low, same.ci_high, same.p_value, same.verdict) == (1.0, 1.0, 1.0, 1.0, UNCHANGED)
    assert grown.ratio == grown.ci_low == grown.ci_high == pytest.approx(1.3, rel=1e-12)
    assert np.isfinite(grown.p_value) and grown.verdict == REGRESSED


def test_one_constant_side_against_a_noisy_side_still_works():
    result = compare_samples([100.0] * 5, noisy(100.0, 0.01, seed=9), higher_is_better=False, threshold=0.05)
    assert result.verdict == UNCHANGED and all(np.isfinite([result.ratio, result.ci_low, result.ci_high]))


def test_too_few_samples_are_not_compared():
    result = compare_samples([1.0], [2.0, 2.1], higher_is_better=False, threshold=0.05)
    assert result.verdict == NOT_COMPARABLE and result.ratio is None and "at least 2" in result.note


def test_the_interval_is_reproducible_for_a_seed():
    base, cand = noisy(STEP_S, 0.05, seed=10), noisy(1.1 * STEP_S, 0.05, seed=11)
    first = compare_samples(base, cand, higher_is_better=False, threshold=0.05, seed=3)
    again = compare_samples(base, cand, higher_is_better=False, threshold=0.05, seed=3)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
