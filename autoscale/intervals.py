"""Student's t interval of a mean of logs: the interval of a geometric mean, or of a ratio measured in
paired rounds. Throughput and timing noise on a shared machine is multiplicative, so logs make it
additive and close to symmetric, which is what t assumes; with the 3 to 12 samples a study or a
nightly job affords, t's tail matters where a percentile bootstrap would be too narrow."""

from __future__ import annotations

import numpy as np
from scipy import stats


def log_t_interval(logs: np.ndarray, confidence: float) -> tuple[float, float]:
    """exp of the two-sided `confidence` t interval of mean(logs) (collapses when every value agrees)."""
    mean = float(np.mean(logs))
    spread = float(np.std(logs, ddof=1))
    if spread == 0:
        return float(np.exp(mean)), float(np.exp(mean))
    half = stats.t.ppf((1 + confidence) / 2, df=logs.size - 1) * spread / np.sqrt(logs.size)
    return float(np.exp(mean - half)), float(np.exp(mean + half))
