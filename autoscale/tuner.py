"""The search: an Optuna study whose every trial is a real engine run (or a cost-model pruning).

Objective: maximise tokens/s subject to peak memory within the device, expressed as an Optuna
constraint (`trial.set_constraint`), so constrained TPE learns where configs do not fit. Failed
trials are recorded with their reason and the study goes on. A point measured before is not run
again: its earlier outcome is reported to the sampler and the trial does not count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import optuna

from autoscale.costmodel.planner import worth_the_risk
from autoscale.costmodel.predict import MEMORY_MARGIN
from autoscale.engine import MeasurePolicy, TrialRequest, TrialResult, run_trial
from autoscale.models.spec import ModelSpec
from autoscale.point import Point, baseline_point
from autoscale.results import RunInfo, TrialRecord, summary_dict, utc_now, write_summary, write_trials_csv
from autoscale.space import SearchSpace, point_for
from autoscale.study import (BASELINE_ATTR, POINT_ATTR, RECORD_ATTR, REPEAT_ATTR, RUN_ATTR, has_baseline_trial,
                             open_study, point_key, point_params, records_of, running_points)

if TYPE_CHECKING:
    from autoscale.costmodel import Prediction

MAX_CONSECUTIVE_REPEATS = 50
__all__ = ["REPEAT_ATTR", "TuneConfig", "TuneOutcome", "tune"]


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    spec: ModelSpec
    space: SearchSpace
    global_batch: int
    seq_len: int
    backend: str
    nproc: int
    trials: int
    out_dir: Path
    study_name: str
    storage: str | None = None  # default: sqlite in out_dir
    resume: bool = False
    seed: int = 0
    timeout_per_trial_s: float = 300.0
    measure: MeasurePolicy = field(default_factory=MeasurePolicy)
    memory_limit_bytes: int | None = None  # per rank
    fault: str | None = None  # test-only, passed to every trial
    seed_points: int = 2  # the cost model's top-ranked points, measured first (see opening_order)
    launcher: str = "warm"  # how the session runs trials: warm fork servers, fresh processes, or hostfile
    hostfile: str | None = None  # launcher "hostfile": DeepSpeed's launcher across these nodes

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    def settings(self) -> dict:
        """What another process needs to continue this search (stored in the study)."""
        return {"spec": asdict(self.spec), "space": {"name": self.space.name, "choices": self.space.choices},
                "global_batch": self.global_batch, "seq_len": self.seq_len, "backend": self.backend,
                "nproc": self.nproc, "trials": self.trials, "seed": self.seed,
                "timeout_per_trial_s": self.timeout_per_trial_s, "measure": asdict(self.measure),
                "seed_points": self.seed_points}

    @classmethod
    def from_settings(cls, settings: dict, **overrides) -> "TuneConfig":
        values = dict(settings)
        values["spec"] = ModelSpec(**values["spec"])
        values["space"] = SearchSpace(values["space"]["name"],
                                      {k: tuple(v) for k, v in values["space"]["choices"].items()})
        values["measure"] = MeasurePolicy(**values["measure"])
        return cls(**{**values, **overrides})


class Observer(Protocol):
    def trial_started(self, number: int, point: Point) -> None: ...
    def trial_finished(self, record: TrialRecord, counted: int) -> None: ...
    def repeat_skipped(self, number: int, point: Point, earlier: int) -> None: ...


class SilentObserver:
    def trial_started(self, number: int, point: Point) -> None:
        pass

    def trial_finished(self, record: TrialRecord, counted: int) -> None:
        pass

    def repeat_skipped(self, number: int, point: Point, earlier: int) -> None:
        pass


@dataclass
class TuneOutcome:
    records: list[TrialRecord]
    summary: dict
    stopped_because: str


class _TrialFailed(Exception):
    """Raised inside the objective so Optuna marks the trial FAIL; the record is already stored."""


def suggest_point(trial: optuna.Trial, space: SearchSpace, *, global_batch: int, world_size: int) -> Point:
    """Define-by-run: offload is only asked where ZeRO can offload (stage >= 1)."""
    knobs = {"zero_stage": trial.suggest_categorical("zero_stage", space.choices["zero_stage"])}
    for knob in ("micro_batch", "precision", "checkpointing", "kernels", "tp", "pp"):
        knobs[knob] = trial.suggest_categorical(knob, space.choices[knob])
    offload_choices = space.choices["offload"] if knobs["zero_stage"] >= 1 else ("none",)
    knobs["offload"] = (trial.suggest_categorical("offload", offload_choices)
                        if len(offload_choices) > 1 or knobs["zero_stage"] >= 1 else "none")
    point = point_for(knobs, global_batch=global_batch, world_size=world_size)
    if point is None:  # the space was restricted to dividing micro-batches, so this is a bug
        raise RuntimeError(f"suggested an impossible point {knobs}")
    return point


def prepare_space(space: SearchSpace, *, backend: str, global_batch: int, world_size: int) -> SearchSpace:
    """Keep what this backend can run and what can make the global batch; fail early if nothing is left."""
    if backend == "cpu":
        space = space.restricted("precision", ("fp32", "bf16"))
        space = space.restricted("kernels", cpu_kernel_sets())
    space.check_global_batch(global_batch=global_batch, world_size=world_size)
    fitting = tuple(m for m in space.choices["micro_batch"]
                    if any(point_for({"zero_stage": 0, "micro_batch": m, "precision": "fp32", "checkpointing": "none",
                                      "offload": "none", "kernels": "torch", "tp": tp, "pp": pp},
                                     global_batch=global_batch, world_size=world_size)
                           for tp in space.choices["tp"] for pp in space.choices["pp"]))
    return space.restricted("micro_batch", fitting)


Predictor = Callable[[Point], "Prediction | None"]


class _Search:
    """One process's share of the study. State lives in the study, re-read before each trial, so
    several workers on one storage neither repeat a point nor overrun the trial budget (by more than
    the trials in flight when the budget is reached)."""

    def __init__(self, config: TuneConfig, info: RunInfo, observer: Observer,
                 run: Callable[[TrialRequest], TrialResult], predictor: Predictor | None):
        self.config, self.info, self.observer, self.run, self.predictor = config, info, observer, run, predictor
        self.space = prepare_space(config.space, backend=config.backend, global_batch=config.global_batch,
                                   world_size=config.nproc)  # before the study: a bad input must not touch it
        self.study = open_study(storage=config.storage_url, study_name=config.study_name, resume=config.resume,
                                seed=config.seed)
        if RUN_ATTR not in self.study.user_attrs:
            self.study.set_user_attr(RUN_ATTR, config.settings())
        self.space_points = self.space.points(global_batch=config.global_batch, world_size=config.nproc)
        self.baseline = baseline_point(config.global_batch, config.nproc)
        self.ranked = ranked_predictions(self.space_points, predictor) if predictor else []
        # borderline points launched despite the margin; the same on resume and in every worker
        self.risked = {point_key(p) for p in worth_the_risk(self.ranked)} if config.seed_points else set()
        self.repeats_in_a_row = 0
        self.stopped_because = "trial budget reached"

    # ---- state, from the study -------------------------------------------------------------

    def records(self) -> list[TrialRecord]:
        return records_of(self.study, global_batch=self.config.global_batch, world_size=self.config.nproc)

    def known(self) -> dict[tuple, TrialRecord]:
        """Points with an outcome: measured (ok or failed) or pruned by the cost model."""
        return {point_key(r.point): r for r in self.records() if r.result is not None or r.status == "pruned"}

    @staticmethod
    def launched(known: dict[tuple, TrialRecord]) -> int:
        return sum(r.status != "pruned" for r in known.values())

    def save(self) -> list[TrialRecord]:
        records = self.records()
        write_trials_csv(records, self.config.out_dir / "trials.csv")
        write_summary(self.info, records, self.config.out_dir / "summary.json")
        return records

    # ---- one point ------------------------------------------------------------------------

    def measure(self, point: Point, number: int, *, is_baseline: bool) -> TrialRecord:
        config, started_at = self.config, utc_now()
        prediction = self.predictor(point) if self.predictor else None
        predicted = dict(pred_peak_bytes=prediction.peak_bytes if prediction else None,
                         pred_tokens_per_s=prediction.tokens_per_s if prediction else None)
        launch_anyway = is_baseline or point_key(point) in self.risked
        if prediction is not None and not prediction.fits and not launch_anyway:
            return TrialRecord(number=number, point=point, status="pruned", is_baseline=is_baseline,
                               reason=(f"pruned: predicted peak {prediction.peak_bytes / 2**30:.2f} GiB exceeds "
                                       f"{MEMORY_MARGIN:.0%} of {prediction.memory_limit_bytes / 2**30:.2f} GiB"),
                               started_at=started_at, finished_at=utc_now(), **predicted)
        workdir = config.out_dir / "trials" / str(number)
        request = TrialRequest(spec=config.spec, point=point, seq_len=config.seq_len, backend=config.backend,
                               nproc=config.nproc, workdir=workdir, timeout_s=config.timeout_per_trial_s,
                               measure=config.measure, seed=config.seed, fault=config.fault)
        result = self.run(request)
        return TrialRecord(number=number, point=point, status="ok" if result.ok else "failed",
                           reason=result.reason, result=result, is_baseline=is_baseline,
                           started_at=started_at, finished_at=utc_now(), **predicted)

    # ---- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        """Queue the cost model's top-ranked points and the baseline, in `opening_order`."""
        seeds: list[Point] = []
        if self.predictor is not None and not any(RECORD_ATTR in t.user_attrs for t in self.study.trials):
            seeds = _seed_points(self.ranked, self.config.seed_points)
        known = self.known()
        baseline_due = point_key(self.baseline) not in known and not has_baseline_trial(self.study)
        budget_left = self.config.trials - self.launched(known)
        enqueue_opening(self.study, opening_order(seeds, self.baseline if baseline_due else None, budget_left),
                        baseline=self.baseline, space=self.space)

    def point_of(self, trial: optuna.Trial) -> Point:
        """The queued point (the baseline, or a trial Optuna retries), else the sampler's suggestion."""
        queued = trial.user_attrs.get(POINT_ATTR)
        if queued is not None:
            return Point.from_dict(queued)
        point = suggest_point(trial, self.space, global_batch=self.config.global_batch, world_size=self.config.nproc)
        trial.set_user_attr(POINT_ATTR, point.as_dict())
        return point

    def objective(self, trial: optuna.Trial) -> float:
        config = self.config
        point = self.point_of(trial)
        known = self.known()
        earlier = known.get(point_key(point))
        in_flight = running_points(self.study, but=trial.number).get(point_key(point))
        if earlier is not None or in_flight is not None:
            self.repeats_in_a_row += 1
            trial.set_user_attr(REPEAT_ATTR, earlier.number if earlier is not None else in_flight)
            self.observer.repeat_skipped(trial.number, point, earlier.number if earlier is not None else in_flight)
            if earlier is None:
                raise optuna.TrialPruned()  # another worker is measuring it: no outcome to report yet
            return _report(trial, earlier, config.memory_limit_bytes)
        self.repeats_in_a_row = 0
        is_baseline = point_key(point) == point_key(self.baseline)
        self.observer.trial_started(-1 if is_baseline else trial.number, point)
        record = self.measure(point, trial.number, is_baseline=is_baseline)
        trial.set_user_attr(RECORD_ATTR, record.to_attrs())
        self.observer.trial_finished(record, self.launched(known) + (record.status != "pruned"))
        return _report(trial, record, config.memory_limit_bytes)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.save()
        known = self.known()
        if self.launched(known) >= self.config.trials:
            study.stop()
        elif all(point_key(p) in known for p in self.space_points) or self.repeats_in_a_row >= MAX_CONSECUTIVE_REPEATS:
            self.stopped_because = "every point of the space was measured"
            study.stop()

    def run_to_budget(self) -> TuneOutcome:
        self.start()
        if self.launched(self.known()) < self.config.trials:
            self.study.optimize(self.objective, callbacks=[self.after_trial], catch=(_TrialFailed,),
                                gc_after_trial=False)
        else:
            self.stopped_because = "trial budget already spent"
        records = self.save()
        return TuneOutcome(records=records, summary=summary_dict(self.info, records),
                           stopped_because=self.stopped_because)


def tune(config: TuneConfig, *, info: RunInfo, observer: Observer | None = None,
         run: Callable[[TrialRequest], TrialResult] = run_trial, predictor: Predictor | None = None) -> TuneOutcome:
    """Run the study to `config.trials` launched trials (baseline included); files kept current.

    With a `predictor` (the cost model), a point predicted not to fit is recorded as pruned and
    never launched (it does not count against the budget), and the study starts from the
    model's top-ranked points. Several processes may run this on one storage at once.
    """
    config.out_dir.mkdir(parents=True, exist_ok=True)
    return _Search(config, info, observer or SilentObserver(), run, predictor).run_to_budget()


def cpu_kernel_sets() -> tuple[str, ...]:
    """Kernel sets worth measuring on CPU: Triton's run only under its interpreter there
    (TRITON_INTERPRET=1, slow: correctness, not speed), otherwise they would fall back to torch."""
    import os

    return ("torch", "compile", "triton") if os.environ.get("TRITON_INTERPRET") == "1" else ("torch", "compile")


def dropped_choices(before: SearchSpace, after: SearchSpace) -> list[str]:
    """What `prepare_space` left out, for the console: nothing is dropped silently."""
    return [f"{knob} {value}" for knob, values in before.choices.items() for value in values
            if value not in after.choices[knob]]


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


def enqueue_opening(study: optuna.Study, order: list[Point], *, baseline: Point, space: SearchSpace) -> None:
    """Queue the opening trials: the baseline with its point (it may lie outside the space), the
    seeds as sampler parameters (so the sampler learns from them), each seed once."""
    for point in order:
        if point == baseline:
            study.enqueue_trial({}, user_attrs={BASELINE_ATTR: True, POINT_ATTR: point.as_dict()})
        else:
            study.enqueue_trial(point_params(point, space), skip_if_exists=True)


def ranked_predictions(points: list[Point], predictor: Predictor) -> list[tuple[Point, "Prediction"]]:
    """Every point the model can lay out with its prediction, fastest predicted first."""
    predicted = [(p, pr) for p in points if (pr := predictor(p)) is not None]
    return sorted(predicted, key=lambda pair: pair[1].tokens_per_s, reverse=True)


def _seed_points(ranked: list[tuple[Point, "Prediction"]], count: int) -> list[Point]:
    """The cost model's `count` fastest fitting points, best first, then `worth_the_risk`'s first point."""
    if count <= 0:
        return []
    fitting = [p for p, pr in ranked if pr.fits]
    return fitting[:count] + worth_the_risk(ranked)[:1]


def _report(trial: optuna.Trial, record: TrialRecord, memory_limit_bytes: int | None) -> float:
    """Tell Optuna the outcome: tokens/s with the memory constraint, or a failed trial.

    A pruned point is reported infeasible (its predicted excess as the constraint) with value 0,
    so constrained TPE learns the region does not fit.
    """
    if record.status == "pruned":
        limit = memory_limit_bytes or 0
        trial.set_constraint("memory_bytes", float(max(1, (record.pred_peak_bytes or 0) - limit)))
        return 0.0
    if record.status != "ok":
        raise _TrialFailed(record.reason)
    peak = record.result.peak_bytes or 0
    trial.set_constraint("memory_bytes", float(peak - memory_limit_bytes) if memory_limit_bytes else 0.0)
    return float(record.result.tokens_per_s)
