"""Start the ranks of one trial as one process group, wait with a timeout, and clean up after it.

This is the launcher's job done directly: each rank is `python -m autoscale.engine.rank` with the
torch.distributed environment DeepSpeed's launcher would set, all in one new process group so a
hang, a crash on one rank or our own timeout ends with `killpg` and leaves no orphan holding a
port or memory.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from autoscale.ds_config import to_ds_config
from autoscale.engine.environment import rank_environment
from autoscale.engine.outcome import (collected, last_line, reason_from_error_files, reason_from_signal,
                                      timed_out)
from autoscale.engine.request import STARTED_MARKER, TrialRequest, TrialResult
from autoscale.probe import PROBE_DIR_ENV

POLL_S = 0.05
PR_SET_PDEATHSIG = 1
GRACE_AFTER_FIRST_FAILURE_S = 2.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def die_with_parent() -> None:
    """Runs in each rank before exec: if the tuner dies (even by SIGKILL), the kernel kills the rank,
    so no orphan keeps a port or memory (prctl(2), PR_SET_PDEATHSIG; Linux only, else a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait(processes: list[subprocess.Popen], deadline: float) -> bool:
    """Wait for all ranks; stop early once one fails. False when the deadline passed."""
    first_failure_at = None
    while time.monotonic() < deadline:
        codes = [p.poll() for p in processes]
        if all(code is not None for code in codes):
            return True
        if first_failure_at is None and any(code not in (None, 0) for code in codes):
            first_failure_at = time.monotonic()
        if first_failure_at is not None and time.monotonic() - first_failure_at > GRACE_AFTER_FIRST_FAILURE_S:
            return True  # the others are stuck in a collective with the dead rank
        time.sleep(POLL_S)
    return False


def failure_reason(workdir: Path, processes: list[subprocess.Popen]) -> str:
    """The ranks' own account, else how the first failed rank process ended."""
    reason = reason_from_error_files(workdir)
    if reason is not None:
        return reason
    for rank, process in enumerate(processes):
        code = process.returncode
        if code is not None and code < 0:
            return reason_from_signal(rank, -code)
        if code not in (None, 0):
            log = last_line(workdir / f"rank{rank}.log")
            return f"crash: rank{rank} exited with code {code}: {log}"
    return "crash: no result written"


def run_trial(request: TrialRequest) -> TrialResult:
    """Run one trial in fresh processes; always returns a result, failed ones with their reason."""
    return run_prepared(_run_once, request)


def run_prepared(run_once: Callable[[TrialRequest], TrialResult], request: TrialRequest) -> TrialResult:
    """Build the compiled ops the trial needs before its clock starts, then run it (`retry_startup_crash`)."""
    from autoscale.engine.ops import prepare_ops

    reason = prepare_ops(request)
    if reason is not None:
        return TrialResult.failed(reason)
    return retry_startup_crash(run_once, request)


def retry_startup_crash(run_once: Callable[[TrialRequest], TrialResult], request: TrialRequest) -> TrialResult:
    """A rank killed by a signal before training began (seen here as a rare SIGABRT inside gloo's
    start-up on a loaded machine) says nothing about the config, so that one case is retried once;
    the second outcome stands."""
    result = run_once(request)
    if result.failure_kind == "crash" and " killed by " in result.reason and not started_training(request.workdir):
        retried = run_once(request)
        return retried if retried.ok else TrialResult.failed(f"{retried.reason} (also on retry)", wall_s=retried.wall_s)
    return result


def started_training(workdir: Path) -> bool:
    return (workdir / STARTED_MARKER).exists()


def prepare_workdir(request: TrialRequest) -> tuple[Path, Path]:
    """Write the request and its ds_config into the trial's folder, clear what an earlier attempt
    left; return the request and result paths the ranks use."""
    workdir = request.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in [*workdir.glob("rank*.error.json"), *workdir.glob("rank*.done"), workdir / "result.json",
                  workdir / STARTED_MARKER, *workdir.glob("probe.rank*.jsonl")]:
        stale.unlink(missing_ok=True)
    request_path, result_path = workdir / "request.json", workdir / "result.json"
    request_path.write_text(request.to_json())
    config = request.ds_config or to_ds_config(request.point, world_size=request.nproc)
    if request.script is not None:
        from autoscale.engine.script import script_ds_config

        config = script_ds_config(config)
    (workdir / "ds_config.json").write_text(json.dumps(config, indent=2))
    return request_path, result_path


def _run_once(request: TrialRequest) -> TrialResult:
    workdir = request.workdir
    request_path, result_path = prepare_workdir(request)

    started = time.monotonic()
    launch_time = time.time()
    env = rank_environment(request.backend, request.nproc, port=free_port(), launch_time=launch_time)
    command = [sys.executable, "-m", "autoscale.engine.rank", str(request_path), str(result_path)]
    if request.script is not None:
        command = request.script.command(sys.executable, workdir / "ds_config.json")
        env[PROBE_DIR_ENV] = str(workdir)
    processes: list[subprocess.Popen] = []
    pgid = None
    try:
        for rank in range(request.nproc):
            with open(workdir / f"rank{rank}.log", "wb") as log:
                rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                group = {"process_group": 0 if pgid is None else pgid}
                processes.append(subprocess.Popen(command, env=rank_env, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, **group))
            pgid = pgid or processes[0].pid
        finished = _wait(processes, started + request.timeout_s)
    finally:
        if pgid is not None:
            kill_group(pgid)
        for process in processes:
            process.wait()
    wall_s = time.monotonic() - started
    if not finished:
        return timed_out(request, wall_s=wall_s)
    if request.script is not None:
        from autoscale.engine.script import script_result

        return script_result(request, processes, wall_s=wall_s, launch_time=launch_time)
    if result_path.exists() and all(p.returncode == 0 for p in processes):
        return collected(result_path, wall_s=wall_s)
    return TrialResult.failed(failure_reason(workdir, processes), wall_s=wall_s)
