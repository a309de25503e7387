"""Many workers on one study, started by Slurm: a job array of `autoscale worker` processes.

`autoscale tune --workers N --launcher slurm --storage URL` writes the study's settings into the
storage first (a worker reads everything from there), submits `sbatch --array=0-(N-1)` whose
every task runs `autoscale worker`, and waits for the array to end. A worker cancelled or
preempted mid-trial leaves a trial whose heartbeat stops; whoever opens the study next fails it
and Optuna retries it once. The tune process then finishes the study as any resumed run does.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from autoscale.errors import UserError

if TYPE_CHECKING:
    from autoscale.tuner import TuneConfig

SLURM_CALL_TIMEOUT_S = 30
POLL_S = 5.0
MAX_FAILED_POLLS = 6  # squeue unreachable for this many polls in a row ends the wait with an error


def worker_command(*, storage: str, study_name: str, out_dir: Path) -> str:
    """The shell line each array task runs; its task id names its folder."""
    out = shlex.quote(str(out_dir.resolve() / "workers" / "worker-")) + '"$SLURM_ARRAY_TASK_ID"'
    return " ".join([shlex.quote(sys.executable), "-m", "autoscale.cli", "worker",
                     "--storage", shlex.quote(storage), "--study-name", shlex.quote(study_name), "--out", out])


def sbatch_argv(*, workers: int, command: str, out_dir: Path, slurm_args: tuple[str, ...] = ()) -> list[str]:
    logs = out_dir.resolve() / "workers"
    return ["sbatch", "--parsable", f"--array=0-{workers - 1}", "--job-name=autoscale-worker", "--ntasks=1",
            f"--output={logs / 'worker-%a.log'}", *slurm_args, "--wrap", command]


def submit_workers(*, workers: int, storage: str, study_name: str, out_dir: Path,
                   slurm_args: tuple[str, ...] = ()) -> str:
    """Submit the array; its job id."""
    (out_dir / "workers").mkdir(parents=True, exist_ok=True)
    argv = sbatch_argv(workers=workers, command=worker_command(storage=storage, study_name=study_name, out_dir=out_dir),
                       out_dir=out_dir, slurm_args=slurm_args)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_CALL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UserError("--workers with --launcher slurm needs Slurm's sbatch on PATH") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"--workers: sbatch did not answer within {SLURM_CALL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise UserError(f"--workers: sbatch refused the worker array: {done.stderr.strip()[:300]}")
    return done.stdout.strip().split(";")[0]  # --parsable: JOBID[;CLUSTER]


def job_is_queued(job_id: str) -> bool | None:
    """Whether any task of the job is pending or running; None when squeue cannot tell."""
    try:
        done = subprocess.run(["squeue", "--noheader", "--format=%i", f"--jobs={job_id}"], capture_output=True,
                              text=True, timeout=SLURM_CALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # a job that left squeue's memory (MinJobAge) is reported as an invalid id: it has ended
        return False if "invalid job id" in done.stderr.lower() else None
    return bool(done.stdout.strip())


def wait_for_job(job_id: str, *, is_queued: Callable[[str], bool | None] = job_is_queued,
                 poll_s: float = POLL_S) -> None:
    """Until the array has ended; the jobs' own time limits (`--time` in --slurm-args) bound it."""
    failures = 0
    while True:
        queued = is_queued(job_id)
        if queued is False:
            return
        failures = failures + 1 if queued is None else 0
        if failures >= MAX_FAILED_POLLS:
            raise UserError(f"--workers: squeue could not say whether job {job_id} is still running")
        time.sleep(poll_s)


def cancel_job(job_id: str) -> None:
    subprocess.run(["scancel", "--quiet", job_id], capture_output=True, timeout=SLURM_CALL_TIMEOUT_S,
                   stdin=subprocess.DEVNULL)


def run_worker_array(config: "TuneConfig", *, workers: int, slurm_args: tuple[str, ...] = (),
                     note: Callable[[str], None] | None = None) -> None:
    """Create the study with its settings, run `workers` Slurm workers on it until they end, then
    let any trial left running by a killed worker go stale, so the next opening fails and retries it."""
    import optuna

    from autoscale.study import HEARTBEAT_S, RUN_ATTR, open_study

    note = note or (lambda text: None)
    study = open_study(storage=config.storage_url, study_name=config.study_name, resume=config.resume)
    if RUN_ATTR not in study.user_attrs:
        study.set_user_attr(RUN_ATTR, config.settings())
    job_id = submit_workers(workers=workers, storage=config.storage_url, study_name=config.study_name,
                            out_dir=config.out_dir, slurm_args=slurm_args)
    note(f"submitted {workers} workers as Slurm job array {job_id}; their logs: {config.out_dir / 'workers'}")
    try:
        wait_for_job(job_id)
    except BaseException:
        cancel_job(job_id)
        raise
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if running:
        note(f"{len(running)} trial(s) of workers that ended mid-trial: failing them once their heartbeat is stale")
        time.sleep(4 * HEARTBEAT_S + 1)
