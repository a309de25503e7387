"""The search: an Optuna study whose every trial is a real engine run (or a cost-model pruning).

Objective: maximise tokens/s subject to peak memory within the device, expressed as an Optuna
constraint (`trial.set_constraint`), so constrained TPE learns where configs do not fit. Failed
trials are recorded with their reason and the study goes on. A point measured before is not run
again: its earlier outcome is reported to the sampler and the trial does not count.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import optuna

from autoscale.engine import MeasurePolicy, TrialRequest, TrialResult, run_trial
from autoscale.errors import UserError
from autoscale.models.spec import ModelSpec
from autoscale.point import Point, baseline_point
from autoscale.results import (RunInfo, TrialRecord, best_record, utc_now, write_summary,
                               write_trials_csv)
from autoscale.space import SearchSpace, point_for

RECORD_ATTR = "autoscale_record"
REPEAT_ATTR = "autoscale_repeat_of"
MAX_CONSECUTIVE_REPEATS = 50
HEARTBEAT_S = 5  # Optuna marks a RUNNING trial without a heartbeat for 4x this as FAIL


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

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"


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
    space.check_global_batch(global_batch=global_batch, world_size=world_size)
    fitting = tuple(m for m in space.choices["micro_batch"]
                    if any(point_for({"zero_stage": 0, "micro_batch": m, "precision": "fp32", "checkpointing": "none",
                                      "offload": "none", "kernels": "torch", "tp": tp, "pp": pp},
                                     global_batch=global_batch, world_size=world_size)
                           for tp in space.choices["tp"] for pp in space.choices["pp"]))
    return space.restricted("micro_batch", fitting)


def _records(study: optuna.Study, *, global_batch: int, world_size: int) -> list[TrialRecord]:
    """Every trial that ran, from the study; a trial whose tuner died mid-run shows as failed."""
    records = []
    baseline = study.user_attrs.get(RECORD_ATTR)
    if baseline:
        records.append(TrialRecord.from_attrs(baseline))
    for trial in study.get_trials(deepcopy=False):
        if REPEAT_ATTR in trial.user_attrs:
            continue
        if RECORD_ATTR in trial.user_attrs:
            records.append(TrialRecord.from_attrs(trial.user_attrs[RECORD_ATTR]))
        elif trial.state == optuna.trial.TrialState.FAIL and trial.params:
            point = point_for({"offload": "none", **trial.params}, global_batch=global_batch, world_size=world_size)
            if point is not None:
                records.append(TrialRecord(number=trial.number, point=point, status="failed",
                                           reason="crash: interrupted (the tuner stopped during this trial)",
                                           started_at=_iso(trial.datetime_start), finished_at=_iso(trial.datetime_complete)))
    return records


def _iso(moment) -> str:
    return moment.astimezone().isoformat(timespec="seconds") if moment else ""


def open_study(config: TuneConfig) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = config.storage_url
    try:
        rdb = optuna.storages.RDBStorage(
            storage, heartbeat_interval=HEARTBEAT_S, grace_period=4 * HEARTBEAT_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as error:  # SQLAlchemy raises many types for a bad URL or an unreachable server
        raise UserError(f"cannot open storage {_masked(storage)}: {str(error).splitlines()[0][:200]}") from None
    existing = {s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)}
    if config.study_name in existing and not config.resume:
        raise UserError(f"study {config.study_name!r} already exists in {_masked(storage)}: "
                        "pass --resume to continue it or choose another --study-name")
    if config.resume and config.study_name not in existing:
        raise UserError(f"--resume: no study {config.study_name!r} in {_masked(storage)}")
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=5, multivariate=True)
    study = optuna.create_study(study_name=config.study_name, storage=rdb, direction="maximize",
                                sampler=sampler, load_if_exists=config.resume)
    optuna.storages.fail_stale_trials(study)
    return study


def _masked(url: str) -> str:
    from autoscale.results import mask_password

    return mask_password(url) or ""


def _key(point: Point) -> tuple:
    return tuple(sorted(point.as_dict().items()))


def tune(config: TuneConfig, *, info: RunInfo, observer: Observer | None = None,
         run: Callable[[TrialRequest], TrialResult] = run_trial) -> TuneOutcome:
    """Run the study to `config.trials` measured trials (baseline included); files kept current."""
    observer = observer or SilentObserver()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(config)
    space = prepare_space(config.space, backend=config.backend, global_batch=config.global_batch,
                          world_size=config.nproc)
    measured: dict[tuple, TrialRecord] = {
        _key(r.point): r for r in _records(study, global_batch=config.global_batch, world_size=config.nproc)
        if r.result is not None}
    counted = len(measured)
    space_points = space.points(global_batch=config.global_batch, world_size=config.nproc)
    repeats_in_a_row = 0
    stopped_because = "trial budget reached"

    def measure(point: Point, number: int | None, *, is_baseline: bool) -> TrialRecord:
        started_at = utc_now()
        request = TrialRequest(spec=config.spec, point=point, seq_len=config.seq_len, backend=config.backend,
                               nproc=config.nproc, workdir=config.out_dir / "trials" / str(number if number is not None else "baseline"),
                               timeout_s=config.timeout_per_trial_s, measure=config.measure, seed=config.seed,
                               fault=config.fault)
        result = run(request)
        return TrialRecord(number=number, point=point, status="ok" if result.ok else "failed",
                           reason=result.reason, result=result, is_baseline=is_baseline,
                           started_at=started_at, finished_at=utc_now())

    def save() -> None:
        records = _records(study, global_batch=config.global_batch, world_size=config.nproc)
        write_trials_csv(records, config.out_dir / "trials.csv")
        write_summary(info, records, config.out_dir / "summary.json")

    baseline = baseline_point(config.global_batch, config.nproc)
    in_space = all(getattr(baseline, k) in space.choices[k] for k in space.choices)
    if _key(baseline) not in measured:
        if in_space:
            study.enqueue_trial({k: getattr(baseline, k) for k in space.choices}, skip_if_exists=True)
        elif counted < config.trials:
            observer.trial_started(-1, baseline)
            record = measure(baseline, None, is_baseline=True)
            study.set_user_attr(RECORD_ATTR, record.to_attrs())
            measured[_key(baseline)] = record
            counted += 1
            save()
            observer.trial_finished(record, counted)

    def objective(trial: optuna.Trial) -> float:
        nonlocal counted, repeats_in_a_row
        point = suggest_point(trial, space, global_batch=config.global_batch, world_size=config.nproc)
        earlier = measured.get(_key(point))
        if earlier is not None:
            repeats_in_a_row += 1
            trial.set_user_attr(REPEAT_ATTR, earlier.number)
            observer.repeat_skipped(trial.number, point, earlier.number)
            return _report(trial, earlier, config.memory_limit_bytes)
        repeats_in_a_row = 0
        observer.trial_started(trial.number, point)
        record = measure(point, trial.number, is_baseline=_key(point) == _key(baseline))
        trial.set_user_attr(RECORD_ATTR, record.to_attrs())
        measured[_key(point)] = record
        counted += 1
        observer.trial_finished(record, counted)
        return _report(trial, record, config.memory_limit_bytes)

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal stopped_because
        save()
        if counted >= config.trials:
            study.stop()
        elif all(_key(p) in measured for p in space_points) or repeats_in_a_row >= MAX_CONSECUTIVE_REPEATS:
            stopped_because = "every point of the space was measured"
            study.stop()

    if counted < config.trials:
        study.optimize(objective, callbacks=[stop_when_done], catch=(_TrialFailed,), gc_after_trial=False)
    else:
        stopped_because = "trial budget already spent by earlier runs"
    save()
    records = _records(study, global_batch=config.global_batch, world_size=config.nproc)
    from autoscale.results import summary_dict

    return TuneOutcome(records=records, summary=summary_dict(info, records), stopped_because=stopped_because)


def _report(trial: optuna.Trial, record: TrialRecord, memory_limit_bytes: int | None) -> float:
    """Tell Optuna the outcome: tokens/s with the memory constraint, or a failed trial."""
    if record.status != "ok":
        raise _TrialFailed(record.reason)
    peak = record.result.peak_bytes or 0
    trial.set_constraint("memory_bytes", float(peak - memory_limit_bytes) if memory_limit_bytes else 0.0)
    return float(record.result.tokens_per_s)
