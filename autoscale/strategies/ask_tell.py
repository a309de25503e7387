"""Optuna samplers as strategies: ask/tell on an in-memory study, with the tuner's rules.

Points come from the tuner's own define-by-run `suggest_point`, so every Optuna strategy sees the
same parameters as `autoscale tune`. A suggestion whose outcome is already known is not launched:
its earlier outcome is told again and the sampler is asked anew, as the tuner does with repeats.
The tuner stops after `MAX_CONSECUTIVE_REPEATS` repeats in a row; a strategy must instead finish
the candidate list, so it then queues a random unmeasured point (`fallbacks` counts how often).
"""

from __future__ import annotations

import random
import warnings
from abc import abstractmethod

import optuna
from optuna.trial import TrialState

from autoscale.engine.request import TrialResult
from autoscale.point import Point
from autoscale.results import TrialRecord
from autoscale.strategies.base import SearchContext, Strategy
from autoscale.study import BASELINE_ATTR, POINT_ATTR, point_key, point_params
from autoscale.tuner import MAX_CONSECUTIVE_REPEATS, suggest_point


class AskTellStrategy(Strategy):
    def __init__(self, context: SearchContext, *, seed: int, max_repeats: int = MAX_CONSECUTIVE_REPEATS):
        super().__init__(context, seed=seed)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.study = optuna.create_study(direction="maximize", sampler=self.sampler(seed))
        self.known: dict[tuple, TrialRecord] = {}  # measured, or settled without a launch (pruned)
        self.pending: dict[tuple, optuna.Trial] = {}
        self.max_repeats = max_repeats
        self.fallback_rng = random.Random(seed)
        self.fallbacks = 0

    @abstractmethod
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    def settle_without_launch(self, point: Point, trial: optuna.Trial) -> TrialRecord | None:
        """An outcome known without a launch (ours: a predicted OOM), or None to launch the point."""
        return None

    def report(self, trial: optuna.Trial, record: TrialRecord) -> None:
        """Plain objective: tokens/s, a failed trial marked FAIL (Optuna's samplers skip those)."""
        if record.status == "ok":
            self.study.tell(trial, float(record.result.tokens_per_s))
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def launchable(self, point: Point) -> bool:
        return True

    def point_of(self, trial: optuna.Trial) -> Point:
        queued = trial.user_attrs.get(POINT_ATTR)
        if queued is not None:
            return Point.from_dict(queued)
        return suggest_point(trial, self.context.space, global_batch=self.context.global_batch,
                             world_size=self.context.world_size)

    def propose(self) -> Point | None:
        repeats = 0
        while True:
            left = [p for p in self.points if point_key(p) not in self.known and self.launchable(p)]
            if not left:
                return None
            if repeats >= self.max_repeats:
                self.study.enqueue_trial(point_params(self.fallback_rng.choice(left), self.context.space))
                self.fallbacks += 1
                repeats = 0
            trial = self.study.ask()
            point = self.point_of(trial)
            key = point_key(point)
            earlier = self.known.get(key)
            if earlier is None:
                earlier = self.settle_without_launch(point, trial)
                if earlier is None:
                    self.pending[key] = trial
                    return point
                self.known[key] = earlier
            else:
                repeats += 1
            self.report(trial, earlier)

    def learn(self, point: Point, result: TrialResult) -> None:
        key = point_key(point)
        trial = self.pending.pop(key)
        record = TrialRecord(number=trial.number, point=point, status="ok" if result.ok else "failed",
                             reason=result.reason, result=result,
                             is_baseline=bool(trial.user_attrs.get(BASELINE_ATTR)))
        self.known[key] = record
        self.report(trial, record)
