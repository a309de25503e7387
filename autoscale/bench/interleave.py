"""Paced A/B rounds: in each round both sides' trials are started at once and take turns, one timed
step at a time.

Whole trials run back to back sit 15-60 s apart on a busy 2-core runner, and other jobs' load moves
within that: per-round ratios of whole trials spread 20-70%, so a 10% slowdown was caught in 1 of 3
runs. Here each side's trial gets a pacing socket (`engine.pacing`); once both have warmed up, they
time `turns` steps each, alternating ABBA step by step, the idle side waiting without using the CPU.
Two neighbouring steps are a fraction of a second apart, so the load weighs on both alike.

A round is still one launch of each side, because a launch has an effect of its own that no number of
steps inside it averages out (measured here: two launches of identical code differed by 3-6% in CPU
time per step, with a standard error of 1-2%); so the rounds, not the steps, are the statistical units
(`bench.paired`). A side's value in a round is the median of its steps there: one step caught by a
burst of load moves a median least.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoscale.bench.one_repeat import RepeatResult

STOP_TIMEOUT_S = 120.0  # for a side to write its result after it was told to stop
ACCEPT_POLL_S = 0.5


class SideFailed(RuntimeError):
    pass


@dataclass
class PacedSide:
    """One side's `one_repeat` process and the conductor's end of its pacing socket."""

    name: str
    process: subprocess.Popen
    server: socket.socket
    socket_dir: Path
    out: Path
    log: Path
    lines: object = None
    tokens_per_step: int = 0
    step_s: list[float] = field(default_factory=list)
    step_cpu_s: list[float] = field(default_factory=list)

    def wait_ready(self, deadline: float) -> None:
        self.server.settimeout(ACCEPT_POLL_S)
        while self.lines is None:
            if self.process.poll() is not None:
                raise SideFailed(self.failure(f"exited {self.process.returncode} before its timed steps"))
            if time.monotonic() > deadline:
                raise SideFailed(f"timeout: the {self.name} side was not ready for its timed steps")
            try:
                connection, _ = self.server.accept()
            except socket.timeout:
                continue
            connection.settimeout(max(1.0, deadline - time.monotonic()))
            self.lines = connection.makefile("rw", encoding="utf-8")
        self.tokens_per_step = int(self._receive()["tokens_per_step"])

    def turn(self) -> None:
        """One timed step of this side while the other waits."""
        self._send({"steps": 1})
        answer = self._receive()
        self.step_s.extend(answer["step_s"])
        self.step_cpu_s.extend(answer["step_cpu_s"])

    def finish(self) -> RepeatResult:
        """Tell the side to stop timing (if it got that far) and read its trial's result."""
        try:
            if self.lines is not None:
                self._send({"steps": 0})
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self.server.close()
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        try:
            return RepeatResult.read(self.out)
        except (OSError, ValueError, KeyError):
            return RepeatResult(ok=False, reason=self.failure(f"exited {self.process.returncode} with no result"))

    def failure(self, what: str) -> str:
        """The side's own reason when its trial wrote one, else what the conductor saw and the log's last line."""
        try:
            result = RepeatResult.read(self.out)
            if not result.ok:
                return result.reason
        except (OSError, ValueError, KeyError):
            pass
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return f"crash: the {self.name} side {what}: {lines[-1] if lines else 'no output'}"

    def _send(self, message: dict) -> None:
        self.lines.write(json.dumps(message) + "\n")
        self.lines.flush()

    def _receive(self) -> dict:
        try:
            line = self.lines.readline()
        except OSError as error:  # socket.timeout included
            raise SideFailed(self.failure(f"stopped answering ({error})")) from None
        if not line:
            raise SideFailed(self.failure("closed its pacing socket"))
        return json.loads(line)


def start_side(name: str, command: list[str], *, folder: Path, env: dict) -> PacedSide:
    """Start `command` (a one_repeat invocation) with a pacing socket, passed as --pace. The socket
    lives in a short temporary folder: a Unix socket's path is limited to 107 bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    socket_dir = Path(tempfile.mkdtemp(prefix="autoscale-pace-"))
    address = str(socket_dir / "socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(1)
    log = folder / "one_repeat.log"
    with log.open("w") as log_file:
        process = subprocess.Popen([*command, "--pace", address], cwd=folder, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    return PacedSide(name=name, process=process, server=server, socket_dir=socket_dir, out=folder / "result.json",
                     log=log)


def paced_round(sides: list[PacedSide], *, turns: int, ready_timeout_s: float) -> tuple[dict[str, dict], str | None]:
    """`turns` steps of each started side, one at a time in ABBA order (the first side leads even turns);
    per side its round's values (empty when the round failed), and the failure if any."""
    failure = None
    try:
        deadline = time.monotonic() + ready_timeout_s
        for side in sides:
            side.wait_ready(deadline)
        for index in range(turns):
            for side in (sides if index % 2 == 0 else sides[::-1]):
                side.turn()
    except SideFailed as error:
        failure = str(error)
    results = {side.name: side.finish() for side in sides}
    failure = failure or next((result.reason for result in results.values() if not result.ok), None)
    if failure is not None:
        return {side.name: {} for side in sides}, failure
    return {side.name: round_values(side, results[side.name]) for side in sides}, None


def round_values(side: PacedSide, result: RepeatResult) -> dict[str, float]:
    """A side's metrics in one round: medians of its timed steps, and its trial's peak memory."""
    step_s = statistics.median(side.step_s)
    values = {"tokens_per_s": side.tokens_per_step / step_s, "step_s": step_s,
              "step_cpu_s": statistics.median(side.step_cpu_s)}
    if "peak_bytes" in result.metrics:
        values["peak_bytes"] = result.metrics["peak_bytes"]
    return values
