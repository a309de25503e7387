"""The driver of a tuning run: the shipped search policy against Optuna storage and the engine.

The policy (`strategies.ours.Autoscale`) proposes each point and is told each outcome; this module
only launches what it proposes, keeps the run folder's files current, and stops at the trial budget.
Objective: maximise tokens/s subject to peak memory within the usable bytes per rank, an Optuna
constraint, so constrained TPE learns where configs do not fit. Failed trials are recorded with
their reason and the study goes on. The study is the state: several processes on one storage
neither repeat a point nor overrun the trial budget (by more than the trials in flight when the
budget is reached), and a resumed run continues where the last one stopped.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

from autoscale import hostload
from autoscale.confirm import MAX_FINALISTS, Confirmation, confirm, finalists, ranked_trials
from autoscale.hostload import LoadLog
from autoscale.costmodel import rank_predictions
from autoscale.costmodel.predict import Predictor
from autoscale.engine import MeasurePolicy, TrialRequest, TrialResult, run_trial
from autoscale.engine.numerics import NumericsRecord, run_reference
from autoscale.engine.request import reference_request
from autoscale.errors import UserError
from autoscale.models.spec import ModelSpec
from autoscale.point import Point
from autoscale.trial_time import TrialTimeLimit
from autoscale.results import (RunInfo, TrialRecord, baseline_record, workload_label, write_summary,
                               write_trials_csv)
from autoscale.space import SearchSpace
from autoscale.strategies.base import SearchContext
from autoscale.strategies.ours import SEED_POINTS, Autoscale, nothing_fits, tpe_sampler
from autoscale.study import INTERRUPTED, REFERENCE_ATTR, RUN_ATTR, heartbeat, open_study, records_of
from autoscale.timing import StudyClock
from autoscale.workload import ScriptWorkload

__all__ = ["TuneConfig", "TuneOutcome", "tune"]


STUDY_MEASURE = MeasurePolicy(max_steps=10)
"""A study's trials stop timing at 10 steps where the engine's default allows 20: a trial's figure
need only be as precise as the noise between launches, which the confirmation measures and which is
larger (3-6% on a quiet host, tens of percent on a busy one); on a busy host the 2% target is out of
reach, and 10 more steps per trial only spent time."""


ROUND_MAX_STEPS = 5
"""A confirmation round's launch times at most 5 steps: each round is one sample of how a config
moves between launches, which the rounds' interval measures, so a round's own steps need only
bring its within-launch error near that spread, not under the 2% target."""


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
    measure: MeasurePolicy = field(default_factory=lambda: STUDY_MEASURE)
    usable_bytes_per_rank: int | None = None  # the memory limit trials are held to (autoscale.budget)
    memory_cap_bytes_per_rank: int | None = None  # CPU: what a rank's trial may add before it fails (engine.memcap)
    fault: str | None = None  # test-only, passed to every trial
    seed_points: int = SEED_POINTS  # the cost model's top-ranked points, measured first (see opening_order)
    confirm_rounds: int = 3  # head-to-head rounds of the finalists before the winner is named (0: none)
    numerics_gate: bool = True  # every trial first trains the reference run's batches and must match it
    launcher: str = "warm"  # how the session runs trials: warm fork servers, fresh processes, or hostfile
    hostfile: str | None = None  # launcher "hostfile": DeepSpeed's launcher across these nodes
    script: ScriptWorkload | None = None  # a user's script is each trial's workload (`engine.script`)
    impl: str = "own"  # what trials train: autoscale's own model, or "transformers" (`models.hf_model`)
    hf_config: dict | None = None  # impl "transformers": the model's config.json, as read

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    def settings(self) -> dict:
        """What another process needs to continue this search (stored in the study)."""
        return {"spec": asdict(self.spec), "space": {"name": self.space.name, "choices": self.space.choices},
                "global_batch": self.global_batch, "seq_len": self.seq_len, "backend": self.backend,
                "nproc": self.nproc, "trials": self.trials, "seed": self.seed,
                "timeout_per_trial_s": self.timeout_per_trial_s, "measure": asdict(self.measure),
                "seed_points": self.seed_points, "confirm_rounds": self.confirm_rounds,
                "numerics_gate": self.numerics_gate, "script": asdict(self.script) if self.script else None,
                "impl": self.impl, "hf_config": self.hf_config}

    def trial_space(self) -> SearchSpace:
        """The space as this run's trials can measure it: this backend's and this workload's choices."""
        return self.space.for_backend(self.backend, global_batch=self.global_batch, world_size=self.nproc,
                                      impl=self.impl, hf_config=self.hf_config)

    def trial_request(self, point: Point, *, workdir: Path, reference: NumericsRecord | None) -> TrialRequest:
        """One trial of `point` in this run: its model, workload, sequence, ranks and limits."""
        return TrialRequest(spec=self.spec, point=point, seq_len=self.seq_len, backend=self.backend,
                            nproc=self.nproc, workdir=workdir, timeout_s=self.timeout_per_trial_s,
                            measure=self.measure, seed=self.seed, impl=self.impl, hf_config=self.hf_config,
                            fault=self.fault, reference=reference, script=self.script,
                            memory_cap_bytes=self.memory_cap_bytes_per_rank)

    @classmethod
    def from_settings(cls, settings: dict, **overrides) -> "TuneConfig":
        values = dict(settings)
        values["spec"] = ModelSpec(**values["spec"])
        values["space"] = SearchSpace(values["space"]["name"],
                                      {k: tuple(v) for k, v in values["space"]["choices"].items()})
        values["measure"] = MeasurePolicy(**values["measure"])
        values["script"] = ScriptWorkload.from_dict(values["script"]) if values.get("script") else None
        return cls(**{**values, **overrides})


class Observer(Protocol):
    def note(self, text: str) -> None: ...
    def trial_started(self, number: int, point: Point) -> None: ...
    def trial_finished(self, record: TrialRecord, counted: int) -> None: ...
    def repeat_skipped(self, number: int, point: Point, earlier: int) -> None: ...


class SilentObserver:
    def note(self, text: str) -> None:
        pass

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
    interrupted: bool = False  # stopped by Ctrl-C: the files hold every trial finished before it
    confirmation: dict | None = None  # `Confirmation.as_dict()`, when the winner was measured again
    unconfirmed_because: str | None = None  # why the winner was not measured again, when it was not


class _Events:
    """The policy's settled (pruned) and repeated trials, passed on to the observer."""

    def __init__(self, observer: Observer, launched: Callable[[], int]):
        self.observer, self.launched = observer, launched

    def settled(self, record: TrialRecord) -> None:
        self.observer.trial_finished(record, self.launched())

    def repeated(self, number: int, point: Point, earlier: int) -> None:
        self.observer.repeat_skipped(number, point, earlier)


def tune(config: TuneConfig, *, info: RunInfo, observer: Observer | None = None,
         run: Callable[[TrialRequest], TrialResult] = run_trial, predictor: Predictor | None = None) -> TuneOutcome:
    """Run the study to `config.trials` launched trials (baseline included); files kept current.

    With a `predictor` (the cost model), a point predicted not to fit is recorded as pruned and
    never launched (it does not count against the budget), and the study starts from the
    model's top-ranked points. Several processes may run this on one storage at once.
    """
    observer = observer or SilentObserver()
    space = config.trial_space()  # before the study: a bad input must not touch it
    clock = StudyClock()
    launcher, run = run, clock.runner(run)

    def launched() -> int:
        return sum(r.status != "pruned" for r in policy.known().values())

    with clock.phase("setup"):
        if predictor is not None:
            predictor = functools.cache(predictor)  # the check below and the policy predict the same points
            check_something_fits(config, space, predictor)
        config.out_dir.mkdir(parents=True, exist_ok=True)
        study = open_study(storage=config.storage_url, study_name=config.study_name, resume=config.resume,
                           sampler=tpe_sampler(config.seed))
        if RUN_ATTR not in study.user_attrs:
            study.set_user_attr(RUN_ATTR, config.settings())
        context = SearchContext(space=space, global_batch=config.global_batch, world_size=config.nproc,
                                predictor=predictor, usable_bytes=config.usable_bytes_per_rank,
                                time_limit=TrialTimeLimit(config.timeout_per_trial_s, config.measure))
        policy = Autoscale(context, seed=config.seed, study=study,
                           seed_points=config.seed_points if predictor else 0, budget=config.trials,
                           always_baseline=True, events=_Events(observer, launched))
    if config.resume:
        observer.note(resumed_note(config, records_of(study)))
    if policy.baseline_note:
        observer.note(policy.baseline_note)

    load = LoadLog(hostload.sample())
    if (busy := hostload.busy_reason(load.before)) is not None:
        observer.note(f"the host is busy ({busy}): throughput figures will be noisy; the finalists are "
                      "measured again head to head before the winner is named")

    def run_info() -> RunInfo:
        fallback = getattr(launcher, "fallback", None)  # engine.fallback.FallbackToFresh
        return replace(info, launcher_fallback=fallback, host_load=load.as_dict(),
                       timing=clock.as_dict(pool_start_s=getattr(launcher, "pool_start_s", 0.0)))

    def save(confirmation: dict | None = None, unconfirmed_because: str | None = None
             ) -> tuple[list[TrialRecord], dict]:
        with clock.phase("summary"):
            records = records_of(study)
            write_trials_csv(records, config.out_dir / "trials.csv", workload=workload_label(info))
            return records, write_summary(run_info(), records, config.out_dir / "summary.json", confirmation,
                                          unconfirmed_because=unconfirmed_because)

    stopped_because = "trial budget already spent" if launched() >= config.trials else "trial budget reached"
    point = None
    try:
        with clock.phase("reference"):
            reference = study_reference(config, study, run, observer, policy.baseline_note)
        while launched() < config.trials:
            point = policy.propose()
            if point is None:
                pruned = sum(r.status == "pruned" for r in policy.known().values())
                stopped_because = "every point of the space was measured" + (
                    f" or pruned ({pruned} predicted not to fit)" if pruned else "")
                break
            trial = policy.trial_of(point)
            observer.trial_started(-1 if policy.is_baseline(point, trial) else trial.number, point)
            request = config.trial_request(point, workdir=config.out_dir / "trials" / str(trial.number),
                                           reference=reference.record)
            result = reference.baseline_result(point) if policy.is_baseline(point, trial) else None
            if result is None:
                with heartbeat(study, trial), clock.phase("trials"):
                    result = run(request)
            record = policy.tell(point, result)
            point = None
            load.add_now()
            observer.trial_finished(record, launched())
            save()
        records = save()[0]
        with clock.phase("confirmation"):
            confirmation, unconfirmed_because = confirm_winner(config, records, run, observer)
        if unconfirmed_because is not None:
            observer.note(f"the winner is named without confirmation: {unconfirmed_because}")
    except KeyboardInterrupt:
        if point is not None and point.key() in policy.pending:
            policy.abandon(point)  # recorded as interrupted; a --resume measures it again
        records, summary = save()
        return TuneOutcome(records=records, summary=summary, interrupted=True,
                           stopped_because=f"interrupted after {launched()} trials; continue with --resume")
    records, summary = save(confirmation, unconfirmed_because)
    return TuneOutcome(records=records, summary=summary, stopped_because=stopped_because, confirmation=confirmation,
                       unconfirmed_because=unconfirmed_because)


@dataclass(frozen=True)
class StudyReference:
    """The study's reference run: the record every trial is checked against, and, when it ran in this
    process, its measurement, which is the baseline trial's (the same point, timed like any trial)."""

    record: NumericsRecord | None = None
    point: Point | None = None
    result: TrialResult | None = None

    def baseline_result(self, point: Point) -> TrialResult | None:
        """The reference's measurement as the trial of `point`, when it is the reference's point."""
        if self.result is None or not self.result.ok or point != self.point:
            return None
        return replace(self.result, loss_gap=0.0)  # it is the reference


def study_reference(config: TuneConfig, study, run: Callable[[TrialRequest], TrialResult], observer: Observer,
                    baseline_note: str | None) -> StudyReference:
    """The losses every trial must reproduce (`engine.numerics`): run once per study, before its first
    trial, and kept in the study, so a resumed run and every worker check against the same record."""
    if not config.numerics_gate:
        return StudyReference()
    if REFERENCE_ATTR in study.user_attrs:
        return StudyReference(NumericsRecord.from_dict(study.user_attrs[REFERENCE_ATTR]))
    if baseline_note is not None:  # the reference is the default point: predicted not to fit here
        observer.note("no reference run (fp32, ZeRO-0, micro-batch 1 is predicted not to fit): trials are not "
                      "checked against one")
        return StudyReference()
    observer.note("reference run: fp32, ZeRO-0, micro-batch 1, timed as the baseline; every trial must "
                  "reproduce its first losses")
    request = reference_request(
        spec=config.spec, seq_len=config.seq_len, global_batch=config.global_batch, nproc=config.nproc,
        backend=config.backend, workdir=config.out_dir / "reference", timeout_s=config.timeout_per_trial_s,
        seed=config.seed, impl=config.impl, hf_config=config.hf_config,
        memory_cap_bytes=config.memory_cap_bytes_per_rank, measure=config.measure)
    results: list[TrialResult] = []

    def kept(request: TrialRequest) -> TrialResult:
        results.append(run(request))
        return results[-1]

    reference, unchecked = run_reference(kept, request)
    if unchecked:
        observer.note(unchecked)
        return StudyReference()
    study.set_user_attr(REFERENCE_ATTR, reference.as_dict())
    return StudyReference(reference, request.point, results[-1])


def confirm_winner(config: TuneConfig, records: list[TrialRecord], run: Callable[[TrialRequest], TrialResult],
                   observer: Observer) -> tuple[dict | None, str | None]:
    """Measure the two fastest trials, every trial within the between-launch noise of the fastest, and
    the baseline again, head to head (`autoscale.confirm`); the winner's intervals, or None and why
    the winner is named without them. Every config here passed the numerics gate in its trial, so
    its rounds warm up and time steps only."""
    ranked = ranked_trials(records, config.usable_bytes_per_rank)
    if len(ranked) < 2:
        return None, f"{len(ranked)} acceptable trial(s): there is nothing to confirm the winner against"
    if config.confirm_rounds < 2:
        return None, (f"--confirm-rounds {config.confirm_rounds}: the winner is one trial's figure, never measured "
                      "again against how far a config moves between launches")
    contenders = finalists(records, config.usable_bytes_per_rank)
    baseline = baseline_record(records)
    count = len(contenders) + (baseline is not None and baseline not in contenders)
    observer.note(f"confirming the winner: {count} configs x {config.confirm_rounds} interleaved rounds, "
                  "joined after the first by every trial within the noise between launches it measures")

    def measure(record: TrialRecord, round_index: int) -> TrialResult:
        observer.trial_started(-1 if record.is_baseline else (record.number or 0), record.point)
        request = config.trial_request(record.point, reference=None,
                                       workdir=config.out_dir / "confirm" / f"{round_index}-{record.number}")
        return run(replace(request, gate=False, measure=replace(config.measure, max_steps=ROUND_MAX_STEPS)))

    confirmation = confirm(contenders, baseline, rounds=config.confirm_rounds, measure=measure,
                           others=[r for r in ranked if r not in contenders])
    for line in band_notes(confirmation):
        observer.note(line)
    return confirmation.as_dict(), None


def band_notes(confirmation: Confirmation) -> list[str]:
    """What the confirmation measured of the noise between launches, and whom it let in or left out."""
    lines = []
    if confirmation.band is not None:
        band = confirmation.band
        full = len(confirmation.contenders) - len(confirmation.joined) >= MAX_FINALISTS
        joined = (f"; trial(s) {', '.join(f'#{n}' for n in confirmation.joined)} within it of the fastest joined"
                  if confirmation.joined else f"; no other trial could join (at most {MAX_FINALISTS} configs)"
                  if full else "; no other trial lies within it of the fastest")
        lines.append(f"between launches on this host one config moved by {band.ratio - 1:.1%} "
                     f"({band.launches} launches of {band.configs} configs){joined}")
    if confirmation.left_out:
        lines.append(f"not confirmed although within the noise between launches of the winner: trial(s) "
                     f"{', '.join(f'#{n}' for n in confirmation.left_out)} (at most {MAX_FINALISTS} configs are "
                     "confirmed): any of them may be as fast as the winner")
    return lines


def resumed_note(config: TuneConfig, records: list[TrialRecord]) -> str:
    """What a --resume continues from, in one line."""
    interrupted = sum(r.reason == INTERRUPTED for r in records)
    counts = {status: sum(r.status == status for r in records) for status in ("ok", "failed", "pruned")}
    failed = counts["failed"] - interrupted
    note = (f"resuming study {config.study_name!r}: {counts['ok'] + failed} trials measured ({counts['ok']} ok, "
            f"{failed} failed), {counts['pruned']} pruned")
    if interrupted:
        note += f", {interrupted} interrupted (measured again)"
    return f"{note}; continuing to {config.trials} trials"


def check_something_fits(config: TuneConfig, space: SearchSpace, predictor: Predictor) -> None:
    """Stop before any trial when the cost model predicts nothing of the space to fit: each trial
    would run until the allocator or the kernel's OOM killer ends it, and on a shared host the
    killer may pick someone else's process."""
    why = nothing_fits(rank_predictions(space.points(global_batch=config.global_batch, world_size=config.nproc),
                                        predictor))
    if why is None:
        return
    hints = ["plan a cluster with --backend model --hardware NAME --gpus N", "choose a smaller --model"]
    if "cpu" not in space.choices["offload"]:
        hints.append("add optimizer offload (offload: [cpu] in the space, with zero_stage >= 1)")
    raise UserError(f"{config.spec.name} does not fit on {config.nproc} {config.backend} rank(s) with global batch "
                    f"{config.global_batch}: {why}; instead {', or '.join(hints)}")
