"""Warm ranks across trials: the per-trial launch overhead paid once per pool, not once per trial.

A fresh launch costs a Python start and imports of torch and DeepSpeed on every trial (seconds;
DeepSpeed's own launcher adds more). `WarmPool` keeps one fork server per rank (`pool_rank`) with
those imports done; each trial is a fork of it that joins a fresh process group on a new port, so
results cannot depend on what ran before (each child starts from the same memory image) and a
failed trial costs only its children. A trial on another world size or backend starts a new pool;
a timed-out trial kills the pool, and the next trial starts a fresh one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoscale.engine.environment import rank_environment
from autoscale.engine.launch import POLL_S, die_with_parent, free_port, kill_group, prepare_workdir, run_prepared
from autoscale.engine.outcome import collected, reason_from_error_files, reason_from_signal, timed_out
from autoscale.engine.request import TrialRequest, TrialResult


POOL_START_TIMEOUT_S = 600.0  # importing torch and DeepSpeed on a loaded machine has taken a minute here


class WarmPool:
    """Callable like `run_trial`; close it (or use it as a context manager) to end the ranks."""

    def __init__(self, pool_dir: Path):
        self.pool_dir = pool_dir
        self.processes: list[subprocess.Popen] = []
        self.shape: tuple[str, int] | None = None  # (backend, nproc) of the live pool
        self.starts = 0
        self.pool_start_s = 0.0  # seconds the pool's users spent starting it and waiting for it, over its life
        self.ready = False  # every server of the live pool has said it is ready

    def __enter__(self) -> "WarmPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, request: TrialRequest) -> TrialResult:
        return run_prepared(self.run, request)

    def start(self, backend: str, nproc: int) -> None:
        """Start the fork servers and return: their imports go on while the caller does other work, and
        the first trial waits for what is left of them (`_wait_until_ready`)."""
        started = time.monotonic()
        self.close()
        self.pool_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.pool_dir.glob("ready-rank*"):
            stale.unlink()
        env = rank_environment(backend, nproc, port=free_port(), launch_time=time.time())
        env["AUTOSCALE_POOL_DIR"] = str(self.pool_dir)
        command = [sys.executable, "-m", "autoscale.engine.pool_rank", backend]
        pgid = None
        for rank in range(nproc):
            with open(self.pool_dir / f"pool-rank{rank}.log", "ab") as log:
                process = subprocess.Popen(command, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                           stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                           preexec_fn=die_with_parent,
                                           process_group=0 if pgid is None else pgid)
            pgid = pgid or process.pid
            self.processes.append(process)
        self.shape = (backend, nproc)
        self.starts += 1
        self.ready = False
        self.pool_start_s += time.monotonic() - started

    def _wait_until_ready(self) -> None:
        """The fork servers' imports are the pool's cost, paid once: not part of any trial's timeout.
        What the study waits here counts in `pool_start_s`."""
        if self.ready:
            return
        started = time.monotonic()
        ready = [self.pool_dir / f"ready-rank{rank}" for rank in range(len(self.processes))]
        deadline = started + POOL_START_TIMEOUT_S
        while time.monotonic() < deadline and not all(path.exists() for path in ready):
            if any(p.poll() is not None for p in self.processes):
                break  # a server died while importing: the trial will report it
            time.sleep(POLL_S)
        self.ready = all(path.exists() for path in ready)
        self.pool_start_s += time.monotonic() - started

    def close(self) -> None:
        if not self.processes:
            return
        for process in self.processes:
            try:
                process.stdin.write(b'{"exit": true}\n')
                process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(p.poll() is None for p in self.processes):
            time.sleep(POLL_S)
        kill_group(self.processes[0].pid)
        for process in self.processes:
            process.wait()
        self.processes, self.shape, self.ready = [], None, False

    def run(self, request: TrialRequest) -> TrialResult:
        workdir = request.workdir
        request_path, result_path = prepare_workdir(request)

        if self.shape != (request.backend, request.nproc) or any(p.poll() is not None for p in self.processes):
            self.start(request.backend, request.nproc)
        self._wait_until_ready()
        started = time.monotonic()  # after the pool is ready: its start is paid once, not by this trial
        line = json.dumps({"request": str(request_path), "result": str(result_path), "port": free_port(),
                           "sent_at": time.time()})
        for process in self.processes:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
        outcome = self._wait(workdir, started + request.timeout_s)
        wall_s = time.monotonic() - started
        if outcome == "timeout":
            self.close()
            return timed_out(request, wall_s=wall_s)
        if outcome == "ok" and result_path.exists():
            return collected(result_path, wall_s=wall_s)
        return TrialResult.failed(self._failure(workdir), wall_s=wall_s)

    def _kill_children(self) -> None:
        """End the trial children, keep the fork servers (psutil: their children are this trial's ranks)."""
        import psutil

        for process in self.processes:
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
            except psutil.NoSuchProcess:
                pass

    def _failure(self, workdir: Path) -> str:
        """The reason from the ranks' error files, else from how a child died (its done file)."""
        reason = reason_from_error_files(workdir)
        if reason is not None:
            return reason
        for rank in range(len(self.processes)):
            done = (workdir / f"rank{rank}.done")
            words = done.read_text().split() if done.exists() else []
            if len(words) == 2 and words[1].isdigit():
                code = int(words[1])
                if code in (signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS):
                    return reason_from_signal(rank, code)
        self.close()  # a fork server itself died: start afresh next time
        return "crash: a warm rank died"

    def _wait(self, workdir: Path, deadline: float) -> str:
        """"ok" when every rank is done, "failed" when one failed or died, "timeout" past the deadline."""
        done = [workdir / f"rank{rank}.done" for rank in range(len(self.processes))]
        while time.monotonic() < deadline:
            if all(path.exists() for path in done):
                return "ok" if all(path.read_text() == "ok" for path in done) else "failed"
            if any(path.exists() and path.read_text() != "ok" for path in done):
                # the other ranks' children are stuck in a collective with the failed one: end them
                self._kill_children()
                while not all(path.exists() for path in done) and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                return "failed"
            if any(p.poll() is not None for p in self.processes):
                return "failed"
            time.sleep(POLL_S)
        return "timeout"
