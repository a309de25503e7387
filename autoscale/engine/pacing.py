"""Timed steps handed out by a conductor, so that two trials on one host can take turns.

A/B benchmarking (`autoscale.bench.interleave`) starts both sides' trials at once and lets each time
a step while the other waits, alternating. Two steps a fraction of a second apart see nearly the same
load from other jobs; two whole trials run back to back (15-60 s apart on a busy 2-core runner) do
not. A waiting trial's rank 0 blocks on its socket and the other ranks on a gloo broadcast, neither
of which uses the CPU (measured: 15 ms of CPU over a 5 s wait), so the waiting side does not slow
the measured one.

The conductor listens on a Unix socket given in `TrialRequest.pace_socket`; rank 0 connects when its
warm-up is over and speaks JSON lines:
    rank 0 -> {"ready": true, "tokens_per_step": N}
    conductor -> {"steps": n}           n > 0: time n steps and report; n == 0: stop timing
    rank 0 -> {"step_s": [t1, ..., tn], "step_cpu_s": [c1, ..., cn]}
"""

from __future__ import annotations

import json
import math
import socket
import time
from typing import Callable

import torch

CONNECT_RETRY_S = 0.05


class Pacer:
    """Rank 0's end of the conversation."""

    def __init__(self, address: str, *, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self._socket.connect(address)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(CONNECT_RETRY_S)
        self._socket.settimeout(timeout_s)  # a conductor that died must not hold the rank past its trial
        self._lines = self._socket.makefile("rw", encoding="utf-8")

    def send(self, message: dict) -> None:
        self._lines.write(json.dumps(message) + "\n")
        self._lines.flush()

    def next_block(self) -> int:
        line = self._lines.readline()
        if not line:
            raise ConnectionError("the conductor closed the pacing socket")
        return int(json.loads(line)["steps"])

    def close(self) -> None:
        self._lines.close()
        self._socket.close()


def paced_steps(address: str, *, rank: int, first_step: int, tokens_per_step: int, timeout_s: float,
                device: torch.device,
                timed_step: Callable[[int], tuple[float, float, float]]) -> tuple[list[float], list[float], float]:
    """Every rank: time the blocks the conductor asks for until it says stop; (wall seconds, CPU seconds,
    last loss). `timed_step(step)` runs one optimizer step and returns (wall s, CPU s, loss)."""
    import torch.distributed as dist

    pacer = Pacer(address, timeout_s=timeout_s) if rank == 0 else None
    if pacer is not None:
        pacer.send({"ready": True, "tokens_per_step": tokens_per_step})
    asked = torch.zeros(1, dtype=torch.int64, device=device)
    step, step_times, cpu_times, loss = first_step, [], [], math.nan
    while True:
        if pacer is not None:
            asked.fill_(pacer.next_block())
        dist.broadcast(asked, src=0)  # the other ranks wait here, idle, while the other trial runs
        steps = int(asked.item())
        if steps == 0:
            if pacer is not None:
                pacer.close()
            return step_times, cpu_times, loss
        block = [timed_step(step + index) for index in range(steps)]
        step += steps
        step_times.extend(seconds for seconds, _, _ in block)
        cpu_times.extend(cpu_seconds for _, cpu_seconds, _ in block)
        loss = block[-1][2]
        if pacer is not None:
            pacer.send({"step_s": [seconds for seconds, _, _ in block],
                        "step_cpu_s": [cpu_seconds for _, cpu_seconds, _ in block]})
