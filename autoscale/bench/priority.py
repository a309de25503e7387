"""The timed trials' scheduling priority: at a raised one, other jobs' load weighs on them far less.

Linux shares a busy core among runnable tasks by weight, and each step of niceness down multiplies a
task's weight by about 1.25 (the kernel's sched_prio_to_weight table: nice 0 weighs 1024, nice -20
88761). A rank at nice 0 among L - 1 other CPU-bound tasks on C cores gets about C / L of a core,
so tonight's step time follows whatever else runs; at nice -20 a default-priority job takes about 1%
of the rank's core. Measured on the 2-core development VM with six bursty CPU-bound jobs beside it
(load average 7-12, benchmarks/bench_ab.py): gpt-tiny's median step 51 ms at nice -20 against 133 ms
at nice 0, and a whole cpu-smoke A/B run 110-130 s against 281-314 s. The paired intervals were of
similar width at both (pairing already cancels the load both sides share); what priority buys is a
run that fits a nightly slot on a busy host. It is no isolation on a VM whose vCPUs share physical
cores: at nice -20 the step was still about 15-25% slower than on the quiet machine.

The bench process lowers its own niceness for the run and restores it afterwards; every process it
starts (the trials' launchers and ranks, both sides of an A/B round) inherits the raised priority.
Lowering niceness needs CAP_SYS_NICE (root) or a matching RLIMIT_NICE; where it is refused the run
goes on at the priority it had and the record says so. A job at a negative niceness of its own, and
time stolen by the hypervisor, still weigh on the steps.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

DEFAULT_NICE = -20  # an adjustment of the bench process's niceness; 0 leaves it as it is
LOWEST_NICE, HIGHEST_NICE = -20, 19


@dataclass(frozen=True)
class Priority:
    nice: int  # the niceness the trials ran at
    refused: str | None = None  # why the asked-for adjustment was not applied


@contextmanager
def raised_priority(adjustment: int) -> Iterator[Priority]:
    """Niceness + `adjustment` (clamped to Linux's range) for the calling thread and the processes it
    starts inside the block; the previous niceness afterwards. On Linux niceness is per thread, and
    a child inherits its forking thread's: start the trials from this thread."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = max(LOWEST_NICE, min(HIGHEST_NICE, before + adjustment))
    if wanted == before:
        yield Priority(nice=before)
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, wanted)
    except PermissionError as error:
        yield Priority(nice=before, refused=f"niceness {wanted} refused ({error.strerror}: lowering it needs "
                                            "root or CAP_SYS_NICE); the trials ran at niceness "
                                            f"{before}")
        return
    try:
        yield Priority(nice=wanted)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)  # raising niceness back is always allowed
