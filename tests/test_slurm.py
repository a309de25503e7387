"""Trials and workers started by Slurm: how Slurm's words and variables are read (everywhere), and a
real one-node Slurm (`ci/slurm-up.sh`) running a trial through srun, a cancelled step, and a
worker array sharing a PostgreSQL study (the `slurm` tests, skipped with the reason where no
Slurm answers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest

from autoscale.engine import TrialRequest
from autoscale.engine.slurm import SlurmRunner, parse_slurm_args, reason_from_srun, slurm_ending, srun_argv
from autoscale.engine.slurm_rank import STEP_FILE, step_id, torch_environment
from autoscale.engine.slurm_workers import sbatch_argv, wait_for_job, worker_command
from autoscale.errors import UserError
from autoscale.models import PRESETS
from autoscale.point import Point

SPACE = "zero_stage: [0, 1, 2]\nmicro_batch: [4, 8]\n"
TUNE = ["--model", "gpt-tiny", "--space", "space.yaml", "--global-batch", "16", "--seq-len", "64", "--backend", "cpu",
        "--nproc", "2", "--confirm-rounds", "0", "--launcher", "slurm"]


def test_each_srun_task_finds_its_rank_and_the_master_in_slurm_s_variables():
    slurm = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "8",
             "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[01-08]", "SLURM_JOB_ID": "42",
             "SLURM_STEP_ID": "5"}
    expanded = []
    env = torch_environment(slurm, expand=lambda nodes: expanded.append(nodes) or "gpu07")
    assert env == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "gpu07"}
    assert expanded == ["gpu[07-08]"]  # the step's nodes, not the whole allocation's
    assert step_id(slurm) == "42.5"


def test_srun_runs_one_task_per_rank_with_the_user_s_options_before_the_command(tmp_path):
    argv = srun_argv(nproc=16, request_path=tmp_path / "request.json", result_path=tmp_path / "result.json",
                     slurm_args=("--partition=gpu", "--gpus-per-task=1"))
    assert argv[:3] == ["srun", "--ntasks=16", "--kill-on-bad-exit=1"]
    assert f"--output={tmp_path / 'rank%t.log'}" in argv
    assert argv.index("--gpus-per-task=1") < argv.index(sys.executable)
    assert argv[-4:] == ["-m", "autoscale.engine.slurm_rank", str(tmp_path / "request.json"), str(tmp_path / "result.json")]


@pytest.mark.parametrize("log, reason", [
    ("slurmstepd: error: *** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO PREEMPTION ***", "preempted: "),
    ("srun: error: Node failure on n2\nsrun: error: n2: task 1: Killed", "node-failure: "),
    ("slurmstepd: error: *** STEP 9.0 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***", "timeout: "),
    ("slurmstepd: error: Detected 1 oom_kill event in StepId=9.0. Some of the step tasks have been OOM Killed.\n"
     "srun: error: n1: task 0: Out Of Memory", "oom: Slurm's memory limit"),
    ("srun: Job step aborted: Waiting up to 7 seconds for job step to finish.\n"
     "slurmstepd-n1: error: *** STEP 9.0 ON n1 CANCELLED AT 2026-01-01T00:00:00 ***",
     "cancelled: the step was cancelled (scancel): slurmstepd-n1: error: *** STEP 9.0 ON n1 CANCELLED"),
    ("srun: Job step aborted: Waiting up to 7 seconds for job step to finish.", "cancelled: "),
    ("srun: error: n1: tasks 0-1: Exited with exit code 3", "crash: rank0 exited with code 3"),
    ("srun: error: n1: task 1: Killed", "oom: rank1 killed by SIGKILL"),
    ("srun: error: Unable to allocate resources: Invalid partition name specified", "crash: srun exited with code 1: "
     "srun: error: Unable to allocate resources: Invalid partition name specified"),
])
def test_a_failed_step_keeps_slurm_s_reason(tmp_path, log, reason):
    assert reason_from_srun(tmp_path, log, 1).startswith(reason)


def test_a_rank_s_own_account_wins_over_how_srun_saw_it_end_but_not_over_slurm_s_ending(tmp_path):
    (tmp_path / "rank0.error.json").write_text('{"kind": "nan", "message": "NonFiniteLoss: loss is nan"}')
    assert reason_from_srun(tmp_path, "srun: error: n1: task 0: Exited with exit code 3", 3) == \
        "nan: rank0: NonFiniteLoss: loss is nan"
    preempted = "*** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO PREEMPTION ***"
    assert reason_from_srun(tmp_path, preempted, 1).startswith("preempted: ")
    assert slurm_ending("srun: error: n1: task 0: Exited with exit code 3") is None


def test_slurm_args_are_options_split_as_a_shell_would():
    assert parse_slurm_args("--partition=gpu --comment='two words'") == ("--partition=gpu", "--comment=two words")
    assert parse_slurm_args(None) == ()
    with pytest.raises(UserError, match="--slurm-args 'hostname': expected srun/sbatch options"):
        parse_slurm_args("hostname")
    with pytest.raises(UserError, match="--slurm-args"):
        parse_slurm_args("--comment='unclosed")


def test_the_worker_array_runs_one_autoscale_worker_per_task_in_a_folder_of_its_own(tmp_path):
    storage = "postgresql://u:p@db/x?sslmode=require&x=1"
    command = worker_command(storage=storage, study_name="my study", out_dir=tmp_path)
    argv = sbatch_argv(workers=3, command=command, out_dir=tmp_path, slurm_args=("--time=30",))
    assert argv[:3] == ["sbatch", "--parsable", "--array=0-2"] and argv[-2:] == ["--wrap", command]
    assert "--time=30" in argv and f"--output={tmp_path / 'workers' / 'worker-%a.log'}" in argv
    shell = subprocess.run(["bash", "-c", f"printf '%s\\n' {command.split(' ', 1)[1]}"], capture_output=True,
                           text=True, env={"SLURM_ARRAY_TASK_ID": "2", "PATH": os.environ["PATH"]}, check=True)
    assert shell.stdout.splitlines() == ["-m", "autoscale.cli", "worker", "--storage", storage, "--study-name",
                                         "my study", "--out", str(tmp_path / "workers" / "worker-2")]


def test_waiting_for_the_array_ends_when_it_leaves_the_queue_and_errs_when_squeue_stays_silent():
    answers = iter([True, None, True, False])
    wait_for_job("7", is_queued=lambda job: next(answers), poll_s=0)
    with pytest.raises(UserError, match="squeue could not say whether job 7"):
        wait_for_job("7", is_queued=lambda job: None, poll_s=0)


# A real Slurm from here on.

def slurm_problem() -> str | None:
    """Why the slurm tests cannot run here, or None."""
    if shutil.which("srun") is None or shutil.which("sinfo") is None:
        return "Slurm is not installed (ci/slurm-up.sh installs and starts it)"
    try:
        state = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s: slurmctld is not running (ci/slurm-up.sh starts it)"
    states = set(state.stdout.split())
    if state.returncode != 0 or not states & {"idle", "mix", "alloc"}:
        return f"no Slurm node is up (sinfo: {(state.stdout + state.stderr).strip()[:200]!r}); run ci/slurm-up.sh"
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = slurm_problem()
    if problem:
        pytest.skip(problem)


def autoscale(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "autoscale.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def slurm_task_processes(folder: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if "autoscale.engine.slurm_rank" in " ".join(p.info["cmdline"] or []) and str(folder) in " ".join(p.info["cmdline"] or [])]


def autoscale_jobs() -> str:
    return subprocess.run(["squeue", "--noheader", "--steps", "--format=%i %j"], capture_output=True, text=True,
                          timeout=10).stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_a_two_rank_trial_runs_as_one_srun_step(slurm, tmp_path, quick_measure):
    request = TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(zero_stage=1, micro_batch=2, grad_accum=2), seq_len=64,
                           backend="cpu", nproc=2, workdir=tmp_path, timeout_s=120, measure=quick_measure)
    result = SlurmRunner()(request)
    assert result.ok, result.reason
    assert result.tokens_per_s > 0 and len(result.peak_bytes_per_rank) == 2  # both ranks joined one group
    job, step = (tmp_path / STEP_FILE).read_text().split(".")
    assert job.isdigit() and step.isdigit()  # task 0 ran inside a real job step
    assert (tmp_path / "rank0.log").exists() and (tmp_path / "rank1.log").exists()
    assert not slurm_task_processes(tmp_path)


@pytest.mark.nightly
@pytest.mark.slurm
@pytest.mark.slow
def test_a_step_cancelled_mid_trial_is_run_again_and_nothing_is_lost_or_counted_twice(slurm, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    run = tmp_path / "run"
    tune = autoscale("tune", *TUNE, "--trials", "1", "--study-name", "cancelled", "--out", str(run), cwd=tmp_path)

    def step_in_flight():  # a one-trial study's trial is the baseline, which the reference run measures
        for step in [*sorted(run.glob("trials/*/" + STEP_FILE)), run / "reference" / STEP_FILE]:
            if (step.parent / "training-started").exists() and not (step.parent / "result.json").exists():
                return step
        return None

    step_file = wait_for(step_in_flight, 150, "a trial to be training in its srun step")
    cancelled = step_file.read_text().strip()
    subprocess.run(["scancel", cancelled], check=True, timeout=10)
    output, _ = tune.communicate(timeout=240)
    assert tune.returncode == 0, output

    assert step_file.read_text().strip() != cancelled  # the trial ran again, in a new step
    first_attempt = (step_file.parent / "slurm-retried").read_text()
    assert first_attempt.startswith(f"cancelled: the step was cancelled (scancel): ") and cancelled in first_attempt
    frame = pd.read_csv(run / "trials.csv", keep_default_na=False)
    assert list(frame.status) == ["ok"], frame.to_string()
    assert frame.number.is_unique and not frame.duplicated(["zero_stage", "micro_batch", "grad_accum"]).any()
    study = optuna.load_study(study_name="cancelled", storage=f"sqlite:///{run / 'study.db'}")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1 and not set(states) & {
        optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL}, states  # (a queued suggestion may wait)
    assert not slurm_task_processes(run) and "autoscale-trial" not in autoscale_jobs()


@pytest.mark.nightly
@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_of_a_slurm_array_share_one_postgres_study(slurm, tmp_path):
    url = os.environ.get("AUTOSCALE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set AUTOSCALE_TEST_POSTGRES_URL (.ci/run starts PostgreSQL and sets it)")
    (tmp_path / "space.yaml").write_text(SPACE)
    name = f"slurm-workers-{os.getpid()}-{int(time.time())}"
    run = tmp_path / "run"
    tune = autoscale("tune", *TUNE, "--trials", "2", "--workers", "2", "--storage", url, "--study-name", name,
                     "--out", str(run), cwd=tmp_path)
    output, _ = tune.communicate(timeout=240)
    assert tune.returncode == 0, output
    assert "submitted 2 workers as Slurm job array" in output

    measured = {folder.name: len(list(folder.glob("trials/*/result.json"))) for folder in (run / "workers").glob("worker-?")}
    assert sorted(measured) == ["worker-0", "worker-1"] and all(measured.values()), measured  # both worked
    frame = pd.read_csv(run / "trials.csv", keep_default_na=False)
    assert (frame.status == "ok").sum() >= 2 and frame.number.is_unique, frame.to_string()
    assert not frame.duplicated(["zero_stage", "micro_batch", "grad_accum"]).any()
    assert not list(run.glob("trials/*"))  # the tune process itself launched nothing: the workers did
    study = optuna.load_study(study_name=name, storage=url)
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    assert "autoscale-worker" not in autoscale_jobs()
