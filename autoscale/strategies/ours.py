"""The search `autoscale tune` runs: the cost model opens it and prunes it, constrained TPE drives it.

`autoscale tune` drives this very object against its study storage and the engine (`autoscale.tuner`);
the replay benchmark drives it against a table of measurements. The policy:
- the opening: the cost model's `seed_points` fastest points predicted to fit, then the fastest
  borderline point worth the risk (`costmodel.worth_the_risk`), then the baseline, which a tuning run
  always measures (within its trial budget: `opening_order`): every knob at its default, or, where
  the model predicts that not to fit, the fitting point with the smallest predicted peak
  (`choose_baseline`);
- then constrained TPE over the space's define-by-run parameters;
- a point predicted past the usable memory is recorded as pruned and told to the sampler as
  infeasible without a launch (never a borderline point worth the risk), so TPE learns the region
  does not fit; a measured peak past the usable memory is infeasible too.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from autoscale.costmodel import Prediction, Predictor, rank_predictions, worth_the_risk
from autoscale.point import Point, baseline_point
from autoscale.results import TrialRecord
from autoscale.strategies.ask_tell import AskTellStrategy
from autoscale.strategies.base import SearchContext
from autoscale.study import BASELINE_ATTR, POINT_ATTR, RECORD_ATTR, has_baseline_trial, point_params

SEED_POINTS = 2


class Autoscale(AskTellStrategy):
    name = "autoscale"

    def __init__(self, context: SearchContext, *, seed: int, study: optuna.Study | None = None,
                 seed_points: int = SEED_POINTS, budget: float = math.inf, always_baseline: bool = False, **options):
        """`budget`: trials the driver will launch, the baseline within it; `always_baseline`: measure the
        baseline even where it lies outside the space (a tuning run's speed-up is of one run)."""
        super().__init__(context, seed=seed, study=study, **options)
        ranked = rank_predictions(self.points, context.predictor) if context.predictor else []
        self.predictions: dict[tuple, Prediction] = {p.key(): pr for p, pr in ranked}
        self.baseline, self.baseline_note = choose_baseline(baseline_point(context.global_batch, context.world_size),
                                                            ranked, context.predictor)
        self.risked = {p.key() for p in worth_the_risk(ranked)} if seed_points else set()
        self._open(ranked, seed_points, budget, always_baseline)

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return tpe_sampler(seed)

    def _open(self, ranked: list[tuple[Point, Prediction]], seed_points: int, budget: float,
              always_baseline: bool) -> None:
        """Queue the opening, unless the study is already under way (resumed, or joined by a worker)."""
        known = self.known()
        first = not any(RECORD_ATTR in t.user_attrs for t in self.study.get_trials(deepcopy=False))
        seeds = opening_seeds(ranked, seed_points) if first else []
        baseline_due = ((always_baseline or self.baseline.key() in {p.key() for p in self.points})
                        and self.baseline.key() not in known and not has_baseline_trial(self.study))
        launched = sum(r.status != "pruned" for r in known.values())
        for point in opening_order(seeds, self.baseline if baseline_due else None, budget - launched):
            if point == self.baseline:
                self.study.enqueue_trial({}, user_attrs={BASELINE_ATTR: True, POINT_ATTR: point.as_dict()})
            else:
                self.study.enqueue_trial(point_params(point, self.context.space), skip_if_exists=True)

    def is_baseline(self, point: Point, trial: optuna.Trial) -> bool:
        return point.key() == self.baseline.key()

    def too_slow(self, prediction: Prediction | None) -> bool:
        limit = self.context.time_limit
        return prediction is not None and limit is not None and limit.too_slow(prediction.time.step_s)

    def launchable(self, point: Point) -> bool:
        prediction = self.predictions.get(point.key())
        if self.too_slow(prediction):
            return False
        return prediction is None or prediction.fits or point.key() in self.risked

    def predicted(self, point: Point) -> dict:
        prediction = self.predictions.get(point.key())
        if prediction is None and self.context.predictor is not None:
            prediction = self.context.predictor(point)  # the baseline may lie outside the space
        return (dict(pred_peak_bytes=prediction.peak_bytes, pred_tokens_per_s=prediction.tokens_per_s)
                if prediction is not None else {})

    def settle_without_launch(self, point: Point, trial: optuna.Trial) -> TrialRecord | None:
        if self.launchable(point):
            return None
        prediction = self.predictions[point.key()]
        reason = (self.context.time_limit.pruned_reason(prediction.time.step_s) if self.too_slow(prediction)
                  else prediction.pruned_reason())
        return TrialRecord(number=trial.number, point=point, status="pruned", reason=reason, **self.predicted(point))

    def report(self, trial: optuna.Trial, record: TrialRecord) -> None:
        """Tokens/s with the memory constraint (the excess over the usable bytes; a pruned point's
        predicted excess, with value 0), or a failed trial."""
        usable = self.context.usable_bytes
        if record.status == "pruned":
            trial.set_constraint("memory_bytes", float(max(1, (record.pred_peak_bytes or 0) - (usable or 0))))
            self.study.tell(trial, 0.0)
        elif record.status != "ok":
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            peak = record.result.peak_bytes or 0
            trial.set_constraint("memory_bytes", float(peak - usable) if usable else 0.0)
            self.study.tell(trial, float(record.result.tokens_per_s))


def tpe_sampler(seed: int) -> optuna.samplers.TPESampler:
    """Multivariate TPE; Optuna reads the constraint `Autoscale.report` sets on each trial."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)


def choose_baseline(default: Point, ranked: list[tuple[Point, Prediction]],
                    predictor: Predictor | None) -> tuple[Point, str | None]:
    """The baseline speed-ups are measured against: every knob at its default, unless the cost model
    predicts that not to fit; then the fitting point with the smallest predicted peak, and a note
    saying so. A baseline that OOMs measures nothing and, on a shared host, may take others down."""
    prediction = predictor(default) if predictor is not None else None
    if prediction is None or prediction.fits:
        return default, None
    fitting = [(p, pr) for p, pr in ranked if pr.fits]
    if not fitting:
        return default, None  # nothing fits: the driver stops before any trial (`nothing_fits`)
    smallest, its_prediction = min(fitting, key=lambda pair: pair[1].peak_bytes)
    return smallest, (f"baseline: {smallest.short()}, the smallest config predicted to fit "
                      f"(the default {default.short()} is {prediction.memory_verdict()})")


def nothing_fits(ranked: list[tuple[Point, Prediction]]) -> str | None:
    """Why no trial should start, when the cost model predicts no point of the space to fit, even
    within its memory error; None when something may."""
    if not ranked or any(pr.fits or pr.borderline for _, pr in ranked):
        return None
    smallest = min((pr for _, pr in ranked), key=lambda pr: pr.peak_bytes)
    return f"the smallest predicted peak is {smallest.budget.against(smallest.peak_bytes)}"


def opening_seeds(ranked: list[tuple[Point, Prediction]], count: int) -> list[Point]:
    """The cost model's `count` fastest fitting points, best first, then `worth_the_risk`'s first point."""
    if count <= 0:
        return []
    fitting = [p for p, pr in ranked if pr.fits]
    return fitting[:count] + worth_the_risk(ranked)[:1]


def opening_order(seeds: list[Point], baseline: Point | None, budget_left: float) -> list[Point]:
    """The first trials: the cost model's seeds, then the baseline (None: already measured or queued).

    The likeliest near-best configs go first, so a good config is in hand as early as possible; the
    baseline, the report's reference for the speedup, comes right after them, and never later than
    the budget's last trial (with one trial left, it is the baseline)."""
    seeds = [p for p in seeds if p != baseline]
    if baseline is None:
        return seeds
    room = max(0, budget_left - 1)  # trials that can go before the baseline
    before = seeds[:int(min(room, len(seeds)))]
    return [*before, baseline, *seeds[len(before):]]
