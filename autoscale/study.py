"""The Optuna study as autoscale's source of truth: opening it, and reading its trials back as records.

Every trial's `TrialRecord` lives in the trial's user attributes, and the run's own settings in
the study's, so any process that can reach the storage (a resumed tuner, a worker on another
machine) sees the same trials and can rebuild the same search.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from autoscale.errors import UserError
from autoscale.point import Point
from autoscale.results import TrialRecord, mask_password
from autoscale.space import SearchSpace

RECORD_ATTR = "autoscale_record"
REPEAT_ATTR = "autoscale_repeat_of"
RUN_ATTR = "autoscale_run"
POINT_ATTR = "autoscale_point"  # set when a trial starts measuring: an interrupted trial still says what it ran
BASELINE_ATTR = "autoscale_baseline"
HEARTBEAT_S = 5  # Optuna marks a RUNNING trial without a heartbeat for 4x this as FAIL, and retries it once
INTERRUPTED = "crash: interrupted (the tuner stopped during this trial)"


def open_study(*, storage: str, study_name: str, resume: bool, seed: int, must_exist: bool = False) -> optuna.Study:
    """Create the study, or load it with `resume`; a storage that cannot be opened is a UserError."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    masked = mask_password(storage)
    _check_url(storage, resume=resume or must_exist, study_name=study_name)
    try:
        rdb = optuna.storages.RDBStorage(
            storage, heartbeat_interval=HEARTBEAT_S, grace_period=4 * HEARTBEAT_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        existing = {s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)}
    except ImportError:
        raise UserError(f"cannot open storage {masked}: its database driver is not installed "
                        "(for PostgreSQL: pip install -e .[postgres])") from None
    except Exception as error:  # SQLAlchemy and drivers raise many types for bad URLs, servers and files
        detail = mask_password(str(error).strip().splitlines()[0][:200]) if str(error).strip() else type(error).__name__
        raise UserError(f"cannot open storage {masked}: {detail}") from None
    if study_name in existing and not resume:
        raise UserError(f"study {study_name!r} already exists in {masked}: "
                        "pass --resume to continue it or choose another --study-name")
    if (resume or must_exist) and study_name not in existing:
        raise UserError(f"no study {study_name!r} in {masked}")
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)
    study = optuna.create_study(study_name=study_name, storage=rdb, direction="maximize", sampler=sampler,
                                load_if_exists=True)
    optuna.storages.fail_stale_trials(study)
    return study


def _check_url(storage: str, *, resume: bool, study_name: str) -> None:
    """Refuse what would leak a password or leave litter before connecting."""
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(storage)
    except Exception:  # noqa: BLE001 - SQLAlchemy's ArgumentError and ValueError alike
        raise UserError(f"cannot open storage {mask_password(storage)}: not a database URL") from None
    if "@" in (url.host or ""):
        raise UserError(f"cannot open storage {mask_password(storage)}: the password holds a raw '@': "
                        "percent-encode it as %40")
    if resume and url.drivername.startswith("sqlite") and url.database and not Path(url.database).is_file():
        raise UserError(f"no study {study_name!r}: {url.database} does not exist")


def records_of(study: optuna.Study, *, global_batch: int, world_size: int) -> list[TrialRecord]:
    """Every trial that ran, once each; a trial whose tuner died mid-run shows as failed."""
    records = []
    for trial in study.get_trials(deepcopy=False):
        if REPEAT_ATTR in trial.user_attrs:
            continue
        if RECORD_ATTR in trial.user_attrs:
            records.append(TrialRecord.from_attrs(trial.user_attrs[RECORD_ATTR]))
        elif trial.state == optuna.trial.TrialState.FAIL and POINT_ATTR in trial.user_attrs:
            records.append(TrialRecord(number=trial.number, point=Point.from_dict(trial.user_attrs[POINT_ATTR]),
                                       status="failed", reason=INTERRUPTED,
                                       is_baseline=bool(trial.user_attrs.get(BASELINE_ATTR)),
                                       started_at=_iso(trial.datetime_start), finished_at=_iso(trial.datetime_complete)))
    return records


def running_points(study: optuna.Study, *, but: int) -> dict[tuple, int]:
    """Points other workers are measuring right now, by key, with their trial numbers."""
    running = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.number != but and REPEAT_ATTR not in trial.user_attrs and POINT_ATTR in trial.user_attrs:
            running[point_key(Point.from_dict(trial.user_attrs[POINT_ATTR]))] = trial.number
    return running


def has_baseline_trial(study: optuna.Study) -> bool:
    """Whether the baseline is queued, running or done (an interrupted one is retried by Optuna)."""
    return any(t.user_attrs.get(BASELINE_ATTR) and t.state != optuna.trial.TrialState.FAIL
               for t in study.get_trials(deepcopy=False))


def _iso(moment) -> str:
    return moment.astimezone().isoformat(timespec="seconds") if moment else ""


def point_key(point: Point) -> tuple:
    return tuple(sorted(point.as_dict().items()))


def point_params(point: Point, space: SearchSpace) -> dict:
    """The Optuna parameters of a point (offload is not asked at ZeRO-0)."""
    params = {k: getattr(point, k) for k in space.choices}
    if point.zero_stage == 0:
        params.pop("offload")
    return params
