"""Confirming the winner: the top configs measured again, head to head, in interleaved rounds.

One trial per config is one sample taken at one moment of a shared machine's load: the same baseline
has measured 11,488 and 5,819 tokens/s in two studies here, and 3-6% apart on a quiet host, while a
trial's own interval (from its step times' relative standard error, within one launch) is about 2%.
So before a study names its best, the configs that could be the best and the baseline are measured
again in rounds, each round running every one of them once, in an order that alternates forwards
and backwards (ABBA: a drift in load hits them alike). Who could be the best is judged against the
noise between launches, measured here and now: the first round runs the two fastest trials (and
every one whose single-trial interval overlaps the fastest's) and the baseline; each of them has
then been launched twice, which measures how far one config moves between launches on this host
(`NoiseBand`), and every other trial within that band of the fastest joins the later rounds, up to
`MAX_FINALISTS`. The winner is the highest median; its ratio to the runner-up and to the baseline are taken
per round (paired: both sides of a ratio ran minutes apart) and summarised by a Student-t interval of
the mean log ratio (throughput noise is multiplicative, so logs make it additive; Kalibera & Jones,
"Rigorous Benchmarking in Reasonable Time", ISMM 2013, argue for per-round ratios with intervals).
When the runner-up's interval includes 1, the two are statistically tied and the console says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from autoscale.budget import acceptable
from autoscale.engine.request import TrialResult
from autoscale.intervals import log_t_interval
from autoscale.point import Point
from autoscale.results import TrialRecord

MAX_FINALISTS = 4
CONFIDENCE = 0.95
SINGLE_TRIAL_Z = 2.0  # a single trial's interval: tokens/s x (1 +- 2 relative standard errors of its step time)
BAND_Z = 2.0  # the band: two single launches of equally fast configs differ by less, about 95% of the time


@dataclass(frozen=True)
class NoiseBand:
    """How far one config's tokens/s moves between launches on this host, pooled over the configs
    launched more than once. Two single launches of equally fast configs differ in log tokens/s by
    sqrt(2) x the launches' standard deviation, so a trial within `ratio` of the fastest (BAND_Z of
    those) could be as fast as it."""

    ratio: float  # the fastest's tokens/s over this is the slowest that could match it
    log_sd: float  # pooled standard deviation of log tokens/s between launches of one config
    configs: int  # configs launched more than once
    launches: int  # their launches in all
    measured_from: str  # what was launched again

    def within(self, tokens_per_s: float, best_tokens_per_s: float) -> bool:
        return tokens_per_s * self.ratio >= best_tokens_per_s


def noise_band(series: list[list[float]], measured_from: str) -> NoiseBand | None:
    """The band from repeated launches (one list of tokens/s per config); None without a repeat."""
    repeated = [np.log(values) for values in series if len(values) > 1]
    freedom = sum(len(logs) - 1 for logs in repeated)
    if not freedom:
        return None
    log_sd = float(np.sqrt(sum(float(np.sum((logs - logs.mean()) ** 2)) for logs in repeated) / freedom))
    return NoiseBand(ratio=float(np.exp(BAND_Z * np.sqrt(2) * log_sd)), log_sd=log_sd, configs=len(repeated),
                     launches=sum(len(logs) for logs in repeated), measured_from=measured_from)


@dataclass(frozen=True)
class Interval:
    """A median (or geometric mean, for ratios) and its two-sided `CONFIDENCE` interval."""

    centre: float
    low: float
    high: float

    def includes(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Contender:
    trial_number: int | None
    point: Point
    samples: tuple[float, ...]  # tokens/s, one per round that ran it (a failed round is left out)
    tokens_per_s: Interval | None  # None with fewer than two samples


@dataclass(frozen=True)
class Confirmation:
    rounds: int
    contenders: tuple[Contender, ...]  # the winner first, then by median tokens/s
    baseline_number: int | None
    vs_runner_up: Interval | None  # winner / runner-up, per round
    vs_baseline: Interval | None  # winner / baseline, per round
    band: NoiseBand | None = None  # between launches, from the first round: who joined the later rounds
    joined: tuple[int | None, ...] = ()  # trials within `band` of the fastest that joined after the first round
    band_after: NoiseBand | None = None  # the same, from every round: what the study's figures moved by
    left_out: tuple[int | None, ...] = ()  # trials within `band_after` of the winner never confirmed (the cap)

    @property
    def winner(self) -> Contender:
        return self.contenders[0]

    @property
    def tied(self) -> bool:
        """The runner-up's ratio interval includes 1: no measurement here tells the two apart."""
        return self.vs_runner_up is not None and self.vs_runner_up.includes(1.0)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["winner_trial_number"] = self.winner.trial_number
        data["tied"] = self.tied
        return data


def ranked_trials(records: list[TrialRecord], usable_bytes: int | None) -> list[TrialRecord]:
    """The acceptable trials, fastest first."""
    return sorted((r for r in records if r.status == "ok" and acceptable(r.result, usable_bytes)),
                  key=lambda r: -r.result.tokens_per_s)


def finalists(records: list[TrialRecord], usable_bytes: int | None) -> list[TrialRecord]:
    """The two fastest acceptable trials and every other whose single-trial interval overlaps the
    fastest's, at most `MAX_FINALISTS`, fastest first. A trial without a step-time error counts as a point."""
    ranked = ranked_trials(records, usable_bytes)
    if not ranked:
        return []
    best_low = _single_trial_bounds(ranked[0].result)[0]
    return ranked[:2] + [r for r in ranked[2:] if _single_trial_bounds(r.result)[1] >= best_low][:MAX_FINALISTS - 2]


def within_band(records: list[TrialRecord], band: NoiseBand, best_tokens_per_s: float, *,
                but: list[TrialRecord]) -> list[TrialRecord]:
    """The trials of `records` (ranked) within `band` of `best_tokens_per_s`, other than `but`."""
    return [r for r in records if r not in but and band.within(r.result.tokens_per_s, best_tokens_per_s)]


def _single_trial_bounds(result: TrialResult) -> tuple[float, float]:
    spread = SINGLE_TRIAL_Z * (result.step_rse or 0.0)
    return result.tokens_per_s * (1 - spread), result.tokens_per_s * (1 + spread)


def round_order(count: int, round_index: int) -> list[int]:
    """Forwards in even rounds, backwards in odd ones: A B C, C B A, A B C, ..."""
    order = list(range(count))
    return order if round_index % 2 == 0 else order[::-1]


def confirm(contenders: list[TrialRecord], baseline: TrialRecord | None, *, rounds: int,
            measure: Callable[[TrialRecord, int], TrialResult], others: list[TrialRecord] = ()) -> Confirmation:
    """Measure `contenders` (and the baseline, for the speed-up) `rounds` times each, interleaved;
    `measure(record, round_index)` runs one trial of that record's point. After the first round, the
    trials of `others` (ranked, fastest first) within the between-launch band of the fastest trial
    join as contenders, up to `MAX_FINALISTS`."""
    contenders = list(contenders)
    field = contenders + ([baseline] if baseline is not None and baseline not in contenders else [])
    samples: list[list[float | None]] = [[] for _ in field]
    band, joined = None, []
    for round_index in range(rounds):
        for i in round_order(len(field), round_index):
            result = measure(field[i], round_index)
            samples[i].append(result.tokens_per_s if result.ok and result.tokens_per_s else None)
        if round_index == 0:
            band = noise_band(launches(field, samples), "each finalist's and the baseline's trial and first round")
            room = MAX_FINALISTS - len(contenders)
            fastest = max(r.result.tokens_per_s for r in contenders)
            joined = within_band(list(others), band, fastest, but=field)[:room] if band and room > 0 else []
            contenders += joined
            field += joined
            samples += [[None] for _ in joined]
    band_after = noise_band(launches(field, samples), "every confirmed config's trial and rounds")
    scored = [(record, series) for record, series in zip(field, samples) if record in contenders]
    scored.sort(key=lambda pair: -_median(pair[1]))
    by_number = {record.number: series for record, series in zip(field, samples)}
    winner = scored[0][1]
    runner_up = scored[1][1] if len(scored) > 1 else None
    left_out = (within_band(list(others), band_after, _median(winner), but=field)
                if band_after is not None else [])
    return Confirmation(
        rounds=rounds,
        contenders=tuple(Contender(trial_number=r.number, point=r.point, samples=tuple(x for x in s if x is not None),
                                   tokens_per_s=log_interval([x for x in s if x is not None]))
                         for r, s in scored),
        baseline_number=baseline.number if baseline is not None else None,
        vs_runner_up=paired_ratio(winner, runner_up) if runner_up is not None else None,
        vs_baseline=paired_ratio(winner, by_number[baseline.number]) if baseline is not None else None,
        band=band, joined=tuple(r.number for r in joined), band_after=band_after,
        left_out=tuple(r.number for r in left_out))


def launches(field: list[TrialRecord], samples: list[list[float | None]]) -> list[list[float]]:
    """Each config's tokens/s over its launches so far: its study trial, then its rounds."""
    return [[record.result.tokens_per_s, *(x for x in series if x is not None)]
            for record, series in zip(field, samples) if record.result and record.result.tokens_per_s]


def log_interval(values: list[float]) -> Interval | None:
    """Geometric mean of positive values and the Student-t interval of their mean log."""
    if len(values) < 2:
        return None
    logs = np.log(values)
    return Interval(float(np.exp(logs.mean())), *log_t_interval(logs, CONFIDENCE))


def paired_ratio(numerator: list[float | None], denominator: list[float | None]) -> Interval | None:
    """Per-round ratios of two series measured in the same rounds (rounds where either failed left out)."""
    ratios = [a / b for a, b in zip(numerator, denominator) if a and b]
    return log_interval(ratios)


def _median(series: list[float | None]) -> float:
    values = [x for x in series if x is not None]
    return float(np.median(values)) if values else 0.0
