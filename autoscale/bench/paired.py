"""Is a change real, when both sides were measured in the same job, alternating? Paired statistics over
rounds: round i holds one repeat of the baseline side and one of the candidate, run back to back, so
whatever load the host had then weighed on both, and the per-round ratio cancels it.

- the **ratio** is the geometric mean of the per-round ratios, exp(mean(log(candidate / baseline)));
- its **interval** is Student's t interval of that mean log ratio (n - 1 degrees of freedom), mapped
  back with exp. t rather than a bootstrap: a nightly job affords 6 to 12 rounds, where a percentile
  bootstrap of a mean is too narrow (it ignores the t tail and shrinks the spread by sqrt((n-1)/n)),
  and log ratios of paired timings are close to symmetric, which is what t assumes;
- the **test** is the two-sided Wilcoxon signed-rank test of the log ratios (exact for small n): one
  round disturbed by a burst of load moves a mean (and t) much more than it moves ranks, so a change
  must hold across most rounds to count. Its smallest two-sided p with n rounds is 2 / 2**n: 0.031 for
  6 rounds, 0.0625 for 5, so fewer than 6 rounds can never flag anything at alpha 0.05.

The verdict (`paired_verdict`) asks three things of a change: the ratio past the threshold, the
rounds' rank test significant (p < alpha), *and* the t interval clear of 1. asv's rule (the first two)
called identical code a regression on a loaded runner: with 8 rounds, 7 leaning one way (a drift in
load does that) give p = 0.023 while the interval still held 1 (1.066 [0.995, 1.143]). Where the
interval is neither clear of 1 beyond the threshold nor inside the threshold band, the rounds cannot
tell yet: `decided` says so, A/B mode adds rounds until they can or its time budget ends, and a run
whose budget ended first is `inconclusive` (exit 0, named on the console), never `unchanged`. The
rule was chosen from a table of unchanged and slowed A/B runs (benchmarks/bench_ab.py, docs/bench.md).
Pure functions of the samples.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from autoscale.bench.stats import IMPROVED, INCONCLUSIVE, NOT_COMPARABLE, REGRESSED, UNCHANGED, Comparison, unusable
from autoscale.intervals import log_t_interval

PAIRED = "paired rounds: t interval of the mean log ratio, Wilcoxon signed-rank"
MIN_ROUNDS = 2


def signed_rank_p(log_ratios: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1 when every round's ratio is exactly 1."""
    if np.all(log_ratios == 0):
        return 1.0
    return float(stats.wilcoxon(log_ratios, alternative="two-sided").pvalue)


def compare_paired(baseline: list[float], candidate: list[float], *, higher_is_better: bool, threshold: float,
                   alpha: float = 0.05, confidence: float = 0.95) -> Comparison:
    """The verdict on one metric from rounds: baseline[i] and candidate[i] were measured in round i."""
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    base_median = float(np.median(base)) if base.size else None
    cand_median = float(np.median(cand)) if cand.size else None
    problem = unusable(base, cand, MIN_ROUNDS)
    if problem is None and base.size != cand.size:
        problem = f"rounds must pair up, has {base.size} baseline and {cand.size} candidate samples"
    if problem:
        return Comparison(baseline_median=base_median, candidate_median=cand_median, ratio=None, ci_low=None,
                          ci_high=None, p_value=None, verdict=NOT_COMPARABLE, note=problem, method=PAIRED)
    log_ratios = np.log(cand) - np.log(base)
    low, high = log_t_interval(log_ratios, confidence)
    p_value = signed_rank_p(log_ratios)
    ratio = float(np.exp(np.mean(log_ratios)))
    verdict = paired_verdict(ratio, (low, high), p_value, higher_is_better=higher_is_better, threshold=threshold,
                             alpha=alpha)
    return Comparison(baseline_median=base_median, candidate_median=cand_median, ratio=ratio, ci_low=low,
                      ci_high=high, p_value=p_value, verdict=verdict, method=PAIRED)


def paired_verdict(ratio: float, interval: tuple[float, float], p_value: float, *, higher_is_better: bool,
                   threshold: float, alpha: float) -> str:
    """Regressed (improved): the ratio (candidate / baseline) past the threshold, the rounds' test
    significant and the interval clear of 1 on the bad (good) side. Unchanged: the interval inside the
    threshold band, so no change of the threshold's size fits the rounds. Otherwise inconclusive."""
    low, high = interval
    worse, worse_low, worse_high = ((1 / ratio, 1 / high, 1 / low) if higher_is_better
                                    else (ratio, low, high))  # above 1 is worse whichever way the metric points
    significant = p_value < alpha
    if significant and worse > 1 + threshold and worse_low > 1:
        return REGRESSED
    if significant and worse < 1 / (1 + threshold) and worse_high < 1:
        return IMPROVED
    if 1 / (1 + threshold) < worse_low and worse_high < 1 + threshold:
        return UNCHANGED
    return INCONCLUSIVE


def decided(comparison: Comparison) -> bool:
    """Whether more rounds could still change the verdict's kind: an undecided comparison straddles the
    threshold (or has too few rounds to compare)."""
    return comparison.verdict in (REGRESSED, IMPROVED, UNCHANGED)
