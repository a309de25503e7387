"""Is a change real? The ratio of medians with a bootstrap confidence interval, and a Mann-Whitney U test.

A stricter form of asv's rule, applied per metric: a change counts only when the whole confidence
interval of the ratio lies beyond the threshold *and* the rank test says the two sides differ (asv
asks only for the ratio itself past its factor); a stored baseline was measured under another
night's load, which no interval over one side's repeats can see. Thresholds are symmetric in
log space: with threshold t, "worse" means a ratio beyond 1+t in the bad direction (1/(1+t) for a
higher-is-better metric), "better" beyond 1+t in the good one. Pure functions of the samples: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

REGRESSED, IMPROVED, UNCHANGED, NOT_COMPARABLE = "regressed", "improved", "unchanged", "not comparable"
# stored baseline: the host's load differed between the sides by more than the threshold; A/B: the paired
# interval still straddled the threshold when the rounds' time budget ended (bench.paired)
INCONCLUSIVE = "inconclusive"
UNPAIRED = "bootstrap ratio of medians, Mann-Whitney U"
MIN_SAMPLES = 2


@dataclass(frozen=True, kw_only=True)
class Comparison:
    baseline_median: float | None
    candidate_median: float | None
    ratio: float | None  # candidate median / baseline median
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # two-sided Mann-Whitney U, or Wilcoxon signed-rank when paired
    verdict: str
    note: str = ""
    method: str = UNPAIRED  # which interval and test gave the verdict


def _median_ratio(baseline: np.ndarray, candidate: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(candidate, axis=axis) / np.median(baseline, axis=axis)


def ratio_interval(baseline: np.ndarray, candidate: np.ndarray, *, confidence: float, n_resamples: int,
                   seed: int) -> tuple[float, float]:
    """Percentile bootstrap of the ratio of medians, each side resampled on its own (scipy's bootstrap).

    Percentile rather than BCa: BCa's jackknife is undefined for constant samples (peak memory on CPU
    repeats to the byte), where the interval must simply collapse onto the ratio.
    """
    if np.ptp(baseline) == 0 and np.ptp(candidate) == 0:
        ratio = float(candidate[0] / baseline[0])
        return ratio, ratio
    result = stats.bootstrap((baseline, candidate), _median_ratio, n_resamples=n_resamples, paired=False,
                             vectorized=True, confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def rank_test_p(baseline: np.ndarray, candidate: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value; 1 when every sample of both sides is the same value."""
    if np.ptp(np.concatenate([baseline, candidate])) == 0:
        return 1.0
    return float(stats.mannwhitneyu(baseline, candidate, alternative="two-sided").pvalue)


def compare_samples(baseline: list[float], candidate: list[float], *, higher_is_better: bool, threshold: float,
                    alpha: float = 0.05, confidence: float = 0.95, n_resamples: int = 2000,
                    seed: int = 0) -> Comparison:
    """The verdict on one metric: regressed, improved, unchanged or not comparable (too few samples)."""
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    base_median = float(np.median(base)) if base.size else None
    cand_median = float(np.median(cand)) if cand.size else None
    problem = unusable(base, cand)
    if problem:
        return Comparison(baseline_median=base_median, candidate_median=cand_median, ratio=None, ci_low=None,
                          ci_high=None, p_value=None, verdict=NOT_COMPARABLE, note=problem)
    ratio = cand_median / base_median
    low, high = ratio_interval(base, cand, confidence=confidence, n_resamples=n_resamples, seed=seed)
    p_value = rank_test_p(base, cand)
    verdict = verdict_of(low, high, p_value, higher_is_better=higher_is_better, threshold=threshold, alpha=alpha)
    return Comparison(baseline_median=base_median, candidate_median=cand_median, ratio=ratio, ci_low=low,
                      ci_high=high, p_value=p_value, verdict=verdict)


def verdict_of(ci_low: float, ci_high: float, p_value: float, *, higher_is_better: bool, threshold: float,
               alpha: float) -> str:
    """The whole interval of the ratio past the threshold, and the test significant."""
    # express both bounds as "how much worse": above 1 is worse whichever way the metric points
    worse_low, worse_high = (1 / ci_high, 1 / ci_low) if higher_is_better else (ci_low, ci_high)
    significant = p_value < alpha
    if significant and worse_low > 1 + threshold:
        return REGRESSED
    if significant and worse_high < 1 / (1 + threshold):
        return IMPROVED
    return UNCHANGED


def unusable(base: np.ndarray, cand: np.ndarray, minimum: int = MIN_SAMPLES) -> str | None:
    """Why two sides of samples cannot be compared, or None."""
    if base.size < minimum or cand.size < minimum:
        return f"needs at least {minimum} samples a side, has {base.size} and {cand.size}"
    if np.any(base <= 0) or np.any(cand <= 0) or not (np.all(np.isfinite(base)) and np.all(np.isfinite(cand))):
        return "samples must be positive and finite"
    return None
