"""Trials whose ranks Slurm starts: one `srun` job step per trial, no ssh and no pdsh.

Inside an allocation (`sbatch`, `salloc`: SLURM_JOB_ID is set) each trial is a job step of it;
outside one, srun asks for a new allocation from `--slurm-args`. Every task runs
`autoscale.engine.slurm_rank`, which maps Slurm's task variables to torch.distributed's. A trial
past its timeout has its step cancelled with `scancel`; a step that Slurm ended (preemption, a
node failure, a cancellation, its memory limit) fails with Slurm's own reason, and the first three,
which say nothing about the config, are run once more.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoscale.engine.environment import rank_environment
from autoscale.engine.launch import free_port, kill_group, prepare_workdir, retry_startup_crash, run_prepared
from autoscale.engine.outcome import collected, last_line_of, reason_from_error_files, reason_from_signal, timed_out
from autoscale.engine.request import TrialRequest, TrialResult
from autoscale.engine.slurm_rank import STEP_FILE
from autoscale.errors import UserError

SRUN_LOG = "srun.log"
RETRIED_FILE = "slurm-retried"  # why Slurm's first attempt at the trial ended, when it was run again
TASK_MODULE = "autoscale.engine.slurm_rank"
SCANCEL_TIMEOUT_S = 30
TASK_LOG_TAIL_CHARS = 4000
STEP_END_GRACE_S = 60  # after scancel, how long srun may take to collect its tasks
NOT_ABOUT_THE_CONFIG = ("preempted", "node-failure", "cancelled")  # Slurm ended the step: run it once more
_SLURM_ENDINGS = (  # srun's and slurmstepd's words for how Slurm ended a step, most specific first
    (re.compile(r"DUE TO PREEMPTION"), "preempted", "Slurm preempted the job"),
    (re.compile(r"DUE TO NODE FAIL|Node failure on "), "node-failure", "a node of the step failed"),
    (re.compile(r"DUE TO TIME LIMIT"), "timeout", "Slurm's time limit ended the step"),
    (re.compile(r"oom[_-]kill event|tasks? \d+\S*: Out Of Memory|exceeded memory limit"), "oom",
     "Slurm's memory limit killed a task"),
    (re.compile(r"\*\*\* (?:STEP|JOB) \S+ ON \S+ CANCELLED"), "cancelled", "the step was cancelled (scancel)"),
    (re.compile(r"Job step aborted"), "cancelled", "the step was cancelled (scancel)"),
)
_TASK_EXIT = re.compile(r"tasks? (\d+)\S*: Exited with exit code (\d+)")
_TASK_KILLED = re.compile(r"tasks? (\d+)\S*: (Killed|Terminated|Aborted|Segmentation fault)")
_SIGNALS = {"Killed": signal.SIGKILL, "Terminated": signal.SIGTERM, "Aborted": signal.SIGABRT,
            "Segmentation fault": signal.SIGSEGV}


def check_srun() -> None:
    if shutil.which("srun") is None:
        raise UserError("--launcher slurm needs Slurm's srun on PATH (run inside sbatch/salloc, or on a login node)")


def parse_slurm_args(text: str | None) -> tuple[str, ...]:
    """`--slurm-args` as srun/sbatch options, split as a shell would; each must be an option."""
    if not text:
        return ()
    try:
        words = tuple(shlex.split(text))
    except ValueError as error:
        raise UserError(f"--slurm-args {text!r}: {error}") from None
    if words and not words[0].startswith("-"):
        raise UserError(f"--slurm-args {text!r}: expected srun/sbatch options such as "
                        "'--partition=gpu --nodes=2', not a command")
    return words


def srun_argv(*, nproc: int, request_path: Path, result_path: Path, slurm_args: tuple[str, ...] = ()) -> list[str]:
    """One job step of `nproc` tasks; task r's output goes to rank<r>.log beside the request, as a
    local trial's does. `--kill-on-bad-exit`: one failed rank ends the step, no peer waits for it."""
    workdir = request_path.parent
    return ["srun", f"--ntasks={nproc}", "--kill-on-bad-exit=1", "--job-name=autoscale-trial",
            f"--output={workdir / 'rank%t.log'}", *slurm_args,
            sys.executable, "-m", TASK_MODULE, str(request_path), str(result_path)]


def slurm_ending(log_text: str) -> str | None:
    """How Slurm itself ended the step (preemption, node failure, time or memory limit, scancel), from
    the lines srun and slurmstepd print; None when Slurm did not end it."""
    for pattern, kind, words in _SLURM_ENDINGS:
        match = pattern.search(log_text)
        if match:
            return f"{kind}: {words}: {_line_of(log_text, match.start())}"
    return None


def reason_from_srun(workdir: Path, log_text: str, returncode: int) -> str:
    """A failed step's reason: Slurm's ending, else the ranks' own account, else how srun saw a task end."""
    reason = slurm_ending(log_text) or reason_from_error_files(workdir)
    if reason is not None:
        return reason
    exited = _TASK_EXIT.search(log_text)
    if exited:
        return f"crash: rank{exited[1]} exited with code {exited[2]}"
    killed = _TASK_KILLED.search(log_text)
    if killed:
        return reason_from_signal(int(killed[1]), _SIGNALS[killed[2]])
    return f"crash: srun exited with code {returncode}: {last_line_of(log_text)}"


def _line_of(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start:end if end >= 0 else len(text)].strip()[:300]


def slurm_messages(workdir: Path) -> str:
    """What Slurm said about the step: srun's own output, then the ends of the task logs, where
    slurmstepd writes its `*** STEP ... CANCELLED ... ***` lines."""
    parts = [(workdir / SRUN_LOG).read_text(errors="replace")]
    for log in sorted(workdir.glob("rank*.log")):
        parts.append(log.read_text(errors="replace")[-TASK_LOG_TAIL_CHARS:])
    return "\n".join(parts)


def cancel_step(workdir: Path, srun: subprocess.Popen) -> None:
    """Cancel the trial's job step and wait, bounded, for srun to collect it. Before the step's id
    is known (the allocation still pending, the tasks starting), srun itself is interrupted: twice
    within a second is srun's own way to end its step or withdraw its request."""
    step = workdir / STEP_FILE
    if step.exists():
        subprocess.run(["scancel", "--quiet", step.read_text().strip()], timeout=SCANCEL_TIMEOUT_S,
                       stdin=subprocess.DEVNULL, capture_output=True)
    else:
        for _ in range(2):
            srun.send_signal(signal.SIGINT)
            time.sleep(0.2)
    try:
        srun.wait(timeout=STEP_END_GRACE_S)
    except subprocess.TimeoutExpired:
        pass


class SlurmRunner:
    """Runs each trial as an srun job step; callable like `run_trial`."""

    def __init__(self, *, slurm_args: tuple[str, ...] = ()):
        self.slurm_args = slurm_args

    def __call__(self, request: TrialRequest) -> TrialResult:
        return run_prepared(self._retrying_slurm_endings, request)

    def _retrying_slurm_endings(self, request: TrialRequest) -> TrialResult:
        (request.workdir / RETRIED_FILE).unlink(missing_ok=True)
        result = self._run_once(request)
        if result.failure_kind in NOT_ABOUT_THE_CONFIG:
            (request.workdir / RETRIED_FILE).write_text(result.reason + "\n")
            retried = retry_startup_crash(self._run_once, request)
            return retried if retried.ok else TrialResult.failed(f"{retried.reason} (also on retry, after: "
                                                                 f"{result.reason})", wall_s=retried.wall_s)
        return result

    def _run_once(self, request: TrialRequest) -> TrialResult:
        request_path, result_path = prepare_workdir(request)
        workdir = request.workdir
        (workdir / STEP_FILE).unlink(missing_ok=True)
        env = rank_environment(request.backend, request.nproc, port=free_port(), launch_time=time.time())
        argv = srun_argv(nproc=request.nproc, request_path=request_path, result_path=result_path,
                         slurm_args=self.slurm_args)
        started = time.monotonic()
        with open(workdir / SRUN_LOG, "wb") as log:
            srun = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    process_group=0)
        try:
            srun.wait(timeout=request.timeout_s)
        except subprocess.TimeoutExpired:
            cancel_step(workdir, srun)
            return timed_out(request, wall_s=time.monotonic() - started)
        finally:
            kill_group(srun.pid)
            srun.wait()
        wall_s = time.monotonic() - started
        if srun.returncode == 0 and result_path.exists():
            return collected(result_path, wall_s=wall_s)
        return TrialResult.failed(reason_from_srun(workdir, slurm_messages(workdir), srun.returncode), wall_s=wall_s)
