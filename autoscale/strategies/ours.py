"""Ours: exactly the search `autoscale tune` runs, driven by ask/tell instead of `study.optimize`.

From the tuner, reused rather than rewritten: the cost model's top-ranked fitting points first
(`_seed_points`, `TuneConfig.seed_points` of them, and the first of `worth_the_risk`'s borderline
points), then the baseline (`opening_order`, `enqueue_opening`), then constrained TPE over
`suggest_point`; a point predicted not to fit is told to the sampler as infeasible without a launch
(never the baseline or one of `worth_the_risk`'s points), and every outcome goes through the tuner's
`_report` (tokens/s plus the memory constraint, failures FAIL).
"""

from __future__ import annotations

import math
from dataclasses import fields

import optuna
from optuna.trial import TrialState

from autoscale.point import Point, baseline_point
from autoscale.results import TrialRecord
from autoscale.strategies.ask_tell import AskTellStrategy
from autoscale.strategies.base import SearchContext
from autoscale.study import point_key
from autoscale.costmodel import worth_the_risk
from autoscale.tuner import (TuneConfig, _report, _seed_points, _TrialFailed, enqueue_opening, opening_order,
                             ranked_predictions)

SEED_POINTS = next(f.default for f in fields(TuneConfig) if f.name == "seed_points")


class Autoscale(AskTellStrategy):
    name = "autoscale"

    def __init__(self, context: SearchContext, *, seed: int, **options):
        if context.predictor is None:
            raise ValueError("strategy 'autoscale' needs the cost model: give the SearchContext a predictor")
        super().__init__(context, seed=seed, **options)
        self.predictions = {point_key(p): context.predictor(p) for p in self.points}
        keys = set(self.predictions)
        self.baseline = baseline_point(context.global_batch, context.world_size)
        ranked = ranked_predictions(self.points, lambda point: self.predictions[point_key(point)])
        seeds = _seed_points(ranked, SEED_POINTS)
        self.risked = {point_key(p) for p in worth_the_risk(ranked)}
        baseline = self.baseline if point_key(self.baseline) in keys else None
        enqueue_opening(self.study, opening_order(seeds, baseline, budget_left=math.inf), baseline=self.baseline,
                        space=context.space)

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        # the sampler of autoscale.study.open_study
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)

    def launchable(self, point: Point) -> bool:
        prediction = self.predictions.get(point_key(point))
        return (point_key(point) == point_key(self.baseline) or prediction is None or prediction.fits
                or point_key(point) in self.risked)

    def settle_without_launch(self, point: Point, trial: optuna.Trial) -> TrialRecord | None:
        if self.launchable(point):
            return None
        prediction = self.predictions[point_key(point)]
        return TrialRecord(number=trial.number, point=point, status="pruned", reason="pruned: predicted not to fit",
                           pred_peak_bytes=prediction.peak_bytes, pred_tokens_per_s=prediction.tokens_per_s)

    def report(self, trial: optuna.Trial, record: TrialRecord) -> None:
        try:
            value = _report(trial, record, self.context.memory_limit_bytes)
        except _TrialFailed:
            self.study.tell(trial, state=TrialState.FAIL)
            return
        self.study.tell(trial, value)
