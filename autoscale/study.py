"""The Optuna study as autoscale's source of truth: opening it, and reading its trials back as records.

Every trial's `TrialRecord` lives in the trial's user attributes, and the run's own settings in
the study's, so any process that can reach the storage (a resumed tuner, a worker on another
machine) sees the same trials and can rebuild the same search.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna

from autoscale.errors import UserError
from autoscale.layout import build_point
from autoscale.point import KNOB_NAMES, Point
from autoscale.provenance import mask_password
from autoscale.results import TrialRecord
from autoscale.space import SearchSpace

RECORD_ATTR = "autoscale_record"
REPEAT_ATTR = "autoscale_repeat_of"
RUN_ATTR = "autoscale_run"
POINT_ATTR = "autoscale_point"  # set when a trial starts measuring: an interrupted trial still says what it ran
BASELINE_ATTR = "autoscale_baseline"
REFERENCE_ATTR = "autoscale_reference"  # the study's reference losses (engine.numerics), shared by every worker
HEARTBEAT_S = 5  # Optuna marks a RUNNING trial without a heartbeat for 4x this as FAIL, and retries it once
INTERRUPTED = "interrupted: the tuner stopped during this trial"


def open_study(*, storage: str, study_name: str, resume: bool, sampler: optuna.samplers.BaseSampler | None = None,
               must_exist: bool = False) -> optuna.Study:
    """Create the study, or load it with `resume`; a storage that cannot be opened is a UserError."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
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


def record_of(trial: optuna.trial.FrozenTrial) -> TrialRecord | None:
    """The trial's record; a trial whose tuner died mid-run shows as failed; None for a repeat, or a
    trial that is queued or still measuring."""
    attrs = trial.user_attrs
    if REPEAT_ATTR in attrs:
        return None
    if RECORD_ATTR in attrs:
        return TrialRecord.from_attrs(attrs[RECORD_ATTR])
    if trial.state == optuna.trial.TrialState.FAIL and POINT_ATTR in attrs:
        return TrialRecord(number=trial.number, point=Point.from_dict(attrs[POINT_ATTR]), status="failed",
                           reason=INTERRUPTED, is_baseline=bool(attrs.get(BASELINE_ATTR)),
                           started_at=_iso(trial.datetime_start), finished_at=_iso(trial.datetime_complete))
    return None


def records_of(study: optuna.Study) -> list[TrialRecord]:
    """Every trial that ran, once each, in trial order."""
    return [record for trial in study.get_trials(deepcopy=False) if (record := record_of(trial)) is not None]


def running_points(study: optuna.Study, *, but: int) -> dict[tuple, int]:
    """Points other workers are measuring right now, by key, with their trial numbers."""
    running = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.number != but and REPEAT_ATTR not in trial.user_attrs and POINT_ATTR in trial.user_attrs:
            running[Point.from_dict(trial.user_attrs[POINT_ATTR]).key()] = trial.number
    return running


def has_baseline_trial(study: optuna.Study) -> bool:
    """Whether the baseline is queued, running or done (an interrupted one is retried by Optuna)."""
    return any(t.user_attrs.get(BASELINE_ATTR) and t.state != optuna.trial.TrialState.FAIL
               for t in study.get_trials(deepcopy=False))


def _iso(moment) -> str:
    return moment.astimezone().isoformat(timespec="seconds") if moment else ""


def point_params(point: Point, space: SearchSpace) -> dict:
    """The Optuna parameters of a point (offload is not asked at ZeRO-0)."""
    params = {k: getattr(point, k) for k in space.choices}
    if point.zero_stage == 0:
        params.pop("offload")
    return params


def suggest_point(trial: optuna.Trial, space: SearchSpace, *, global_batch: int, world_size: int) -> Point:
    """Define-by-run, the inverse of `point_params`: offload is only asked where ZeRO can offload
    (stage >= 1). Raises RuleError for a combination the layout rules refuse."""
    knobs = {"zero_stage": trial.suggest_categorical("zero_stage", space.choices["zero_stage"])}
    for knob in KNOB_NAMES:
        if knob not in knobs and knob != "offload":
            knobs[knob] = trial.suggest_categorical(knob, space.choices[knob])
    knobs["offload"] = (trial.suggest_categorical("offload", space.choices["offload"]) if knobs["zero_stage"] >= 1
                        else "none")
    return build_point(knobs, global_batch=global_batch, world_size=world_size)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial):
    """Beat for a running trial while it measures, as `study.optimize` does for its own trials: a
    tuner that dies mid-trial leaves a stale heartbeat, and `open_study` fails the trial (and Optuna
    retries it once) instead of leaving it running for ever. Optuna has no public handle for this in
    ask-and-tell, hence the two private attributes."""
    storage = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
    if interval is None:
        yield
        return
    stopped = threading.Event()

    def beat() -> None:
        while not stopped.wait(interval):
            storage.record_heartbeat(trial._trial_id)

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name="autoscale-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()
