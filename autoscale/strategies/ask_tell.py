"""Optuna samplers as strategies: ask/tell on an Optuna study, with the search's shared rules.

The study is the strategy's memory: every outcome is a `TrialRecord` in its trial's user attributes,
so a strategy driven on a shared storage (`autoscale tune` with several workers, or `--resume`) sees
what other processes measured, and one driven in memory (the replay benchmark) behaves the same.
Points come from define-by-run `study.suggest_point`, so every Optuna strategy sees the same
parameters. A suggestion whose outcome is known, or that another process is measuring, is not
launched: its earlier outcome is told again and the sampler is asked anew. After `max_repeats`
such repeats in a row the sampler is stuck in what it knows, and a random unmeasured point is
queued (`fallbacks` counts how often), so every point the strategy would launch is reached.
"""

from __future__ import annotations

import random
import warnings
from abc import abstractmethod
from typing import Protocol

import optuna
from optuna.trial import TrialState

from autoscale.engine.request import TrialResult
from autoscale.errors import RuleError
from autoscale.point import Point
from autoscale.provenance import utc_now
from autoscale.results import TrialRecord
from autoscale.strategies.base import SearchContext, Strategy
from autoscale.study import (BASELINE_ATTR, POINT_ATTR, RECORD_ATTR, REPEAT_ATTR, point_params, record_of,
                             running_points, suggest_point)

MAX_CONSECUTIVE_REPEATS = 50


class Events(Protocol):
    """What a driver hears of the trials settled without a launch."""

    def settled(self, record: TrialRecord) -> None: ...
    def repeated(self, number: int, point: Point, earlier: int) -> None: ...


class _Quiet:
    def settled(self, record: TrialRecord) -> None:
        pass

    def repeated(self, number: int, point: Point, earlier: int) -> None:
        pass


class AskTellStrategy(Strategy):
    def __init__(self, context: SearchContext, *, seed: int, study: optuna.Study | None = None,
                 max_repeats: int = MAX_CONSECUTIVE_REPEATS, events: Events | None = None):
        super().__init__(context, seed=seed)
        if study is None:
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(direction="maximize", sampler=self.sampler(seed))
        self.study = study
        self.events = events or _Quiet()
        self.pending: dict[tuple, tuple[optuna.Trial, str]] = {}  # launched: the trial and when it started
        self.max_repeats = max_repeats
        self.repeats_in_a_row = 0
        self.fallback_rng = random.Random(seed)
        self.fallbacks = 0
        self._known: dict[tuple, TrialRecord] = {}
        self._read: set[int] = set()  # trial numbers whose outcome is final and already in _known

    @abstractmethod
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    # ---- hooks for strategies that know more than the sampler ---------------------------------

    def settle_without_launch(self, point: Point, trial: optuna.Trial) -> TrialRecord | None:
        """An outcome known without a launch (ours: a predicted OOM), or None to launch the point."""
        return None

    def launchable(self, point: Point) -> bool:
        return True

    def is_baseline(self, point: Point, trial: optuna.Trial) -> bool:
        return bool(trial.user_attrs.get(BASELINE_ATTR))

    def predicted(self, point: Point) -> dict:
        """The record's predicted figures (`pred_peak_bytes`, `pred_tokens_per_s`), where the strategy has them."""
        return {}

    def report(self, trial: optuna.Trial, record: TrialRecord) -> None:
        """Plain objective: tokens/s, a failed trial marked FAIL (Optuna's samplers skip those)."""
        if record.status == "ok":
            self.study.tell(trial, float(record.result.tokens_per_s))
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    # ---- state, from the study ----------------------------------------------------------------

    def known(self) -> dict[tuple, TrialRecord]:
        """Points with an outcome in the study: measured (ok or failed) or settled without a launch.
        A trial interrupted mid-measurement has none: it may be measured again."""
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number in self._read or not trial.state.is_finished():
                continue
            self._read.add(trial.number)
            record = record_of(trial)
            if record is not None and (record.result is not None or record.status == "pruned"):
                self._known[record.point.key()] = record
        return self._known

    def trial_of(self, point: Point) -> optuna.Trial:
        """The trial measuring `point`, between `propose` and `tell`."""
        return self.pending[point.key()][0]

    # ---- propose / tell -------------------------------------------------------------------------

    def propose(self) -> Point | None:
        while True:
            known = self.known()
            busy = running_points(self.study, but=-1)  # other workers' trials
            left = [p for p in self.points if p.key() not in known and p.key() not in busy and self.launchable(p)]
            if not left:
                return None
            if self.repeats_in_a_row >= self.max_repeats:
                self.study.enqueue_trial(point_params(self.fallback_rng.choice(left), self.context.space))
                self.fallbacks += 1
                self.repeats_in_a_row = 0
            trial = self.study.ask()
            point = self.point_of(trial)
            if point is None:  # a combination the layout rules refuse, or a list space lacks
                self.repeats_in_a_row += 1
                self.study.tell(trial, state=TrialState.PRUNED)
                continue
            trial.set_user_attr(POINT_ATTR, point.as_dict())
            earlier = known.get(point.key())
            # looked again once this trial names its point: a worker that asked the same point between our
            # look and our naming it is seen now (or sees ours), so at most one of the two measures it
            in_flight = None if earlier is not None else (
                busy.get(point.key()) or running_points(self.study, but=trial.number).get(point.key()))
            if earlier is not None or in_flight is not None:
                self.repeats_in_a_row += 1
                number = earlier.number if earlier is not None else in_flight
                trial.set_user_attr(REPEAT_ATTR, number)
                self.events.repeated(trial.number, point, number)
                if earlier is None:
                    self.study.tell(trial, state=TrialState.PRUNED)  # no outcome to report yet
                else:
                    self.report(trial, earlier)
                continue
            self.repeats_in_a_row = 0
            record = self.settle_without_launch(point, trial)
            if record is None:
                self.pending[point.key()] = (trial, utc_now())
                return point
            trial.set_user_attr(RECORD_ATTR, record.to_attrs())
            self.report(trial, record)
            self.events.settled(record)

    def tell(self, point: Point, result: TrialResult) -> TrialRecord:
        super().tell(point, result)
        trial, started_at = self.pending.pop(point.key())
        record = TrialRecord(number=trial.number, point=point, status="ok" if result.ok else "failed",
                             reason=result.reason, result=result, is_baseline=self.is_baseline(point, trial),
                             started_at=started_at, finished_at=utc_now(), **self.predicted(point))
        trial.set_user_attr(RECORD_ATTR, record.to_attrs())
        self.report(trial, record)
        return record

    def abandon(self, point: Point) -> None:
        """The measurement of `point` was cut short (the driver was interrupted): the trial fails
        without a record, so the study shows it as interrupted and a later run may measure it."""
        trial, _ = self.pending.pop(point.key())
        self.study.tell(trial, state=TrialState.FAIL)

    def point_of(self, trial: optuna.Trial) -> Point | None:
        """The queued point (the baseline, or a trial Optuna retries), else the sampler's suggestion;
        None for a suggestion the layout rules refuse or, in a list space, one that is not listed (its
        candidates carry their own grad_accum, so the suggested knobs pick the candidate)."""
        queued = trial.user_attrs.get(POINT_ATTR)
        if queued is not None:
            return Point.from_dict(queued)
        try:
            point = suggest_point(trial, self.context.space, global_batch=self.context.global_batch,
                                  world_size=self.context.world_size)
        except RuleError:
            point = None
        return point if self.context.listed is None else self.context.candidate(trial.params)
