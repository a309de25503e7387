"""A CPU rank's memory cap: a config that needs more than its rank's share fails its own trial, not the host.

On CPU every rank draws on the host's memory, so a config the cost model under-predicts could drive
the host into its OOM killer, which may pick the tuner or another process instead of the rank.
Each CPU rank therefore caps its own growth, before it trains, at the per-rank limit it is given
(`TrialRequest.memory_cap_bytes`: the host's share per rank, `budget.MemoryBudget.device_bytes`). An
allocation past the cap fails inside that rank (torch: "can't allocate memory", a MemoryError in
Python), which the rank reports as oom, naming the cap; the study goes on.

Mechanism: `setrlimit(RLIMIT_DATA)`, which Linux (>= 4.7) checks against the process's private
writable mappings (`VmData` in /proc/<pid>/status), the pages malloc and torch's CPU allocator
hand out. RLIMIT_AS counts every reservation too (glibc's per-thread malloc arenas reserve 64 MiB
of address space each, inaccessible until used), and RLIMIT_RSS is ignored by Linux. A cgroup
v2 `memory.max` would cap resident memory itself, but needs a delegated cgroup with the memory
controller, which neither this project's CI nor a typical user's shell has; the cap is rlimit only.

The cap is the rank's VmData when it is set (the interpreter, torch and DeepSpeed, inherited by a
warm fork: 177 MiB in a fresh gpt-tiny rank here, 357 MiB in a warm fork) plus the limit plus the
part of DeepSpeed's communication buckets that a CPU never touches. DeepSpeed allocates its ZeRO
buckets whole (`reduce_bucket_size`, 5e8 elements) but a CPU commits only the pages written, so
they count in VmData, not in the resident set: measured on 2-rank gpt-tiny trials, one anonymous
mapping of 3,815 MiB with 4 MiB resident under ZeRO-2 with offload (two fp32 buckets) and 954 MiB
with 2 MiB resident under ZeRO-3 bf16 (one bf16 bucket), exactly the cost model's
`bucket_bytes` on a GPU less its figure on a CPU. Without that headroom a rank whose share of the
host is a few GiB could not run ZeRO-2 at all. The cap then bounds what a trial may make resident
to about its limit, whichever launcher started the rank. A GPU's memory is not host memory: CUDA
ranks are never capped.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoscale.engine.request import TrialRequest

MECHANISM = "RLIMIT_DATA"
_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class MemoryCap:
    """The cap one rank runs under: its limit, what it held before the trial, and the rlimit set."""

    limit_bytes: int  # what the trial may add: the rank's share of the host
    baseline_bytes: int  # VmData when the cap was set: the interpreter, torch and DeepSpeed
    untouched_bytes: int  # DeepSpeed's buckets, allocated whole, of which a CPU touches only what it writes
    mechanism: str = MECHANISM

    @property
    def cap_bytes(self) -> int:
        return self.baseline_bytes + self.limit_bytes + self.untouched_bytes

    def describe(self) -> str:
        mib = 2**20
        return (f"memory cap {self.limit_bytes / mib:,.0f} MiB per rank ({self.mechanism} at {self.cap_bytes / mib:,.0f} "
                f"MiB: {self.baseline_bytes / mib:,.0f} MiB before the trial, {self.untouched_bytes / mib:,.0f} MiB of "
                "untouched ZeRO buckets)")


_active: MemoryCap | None = None


def data_bytes() -> int:
    """This process's private writable mappings (VmData), the figure RLIMIT_DATA is checked against."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def untouched_bucket_bytes(request: "TrialRequest") -> int:
    """What DeepSpeed's buckets reserve for the request's point beyond what a CPU writes of them."""
    from autoscale.costmodel.memory import bucket_bytes

    params, point = request.spec.param_count(), request.point
    reserved, written = (bucket_bytes(params, precision=point.precision, zero_stage=point.zero_stage, on_cpu=on_cpu)
                         for on_cpu in (False, True))
    return int(max(0.0, reserved - written))


def apply_memory_cap(request: "TrialRequest") -> MemoryCap | None:
    """Cap this process before its trial; None where nothing is capped (no limit, or not a CPU rank)."""
    global _active
    if request.memory_cap_bytes is None or request.backend != "cpu":
        return None
    cap = MemoryCap(limit_bytes=int(request.memory_cap_bytes), baseline_bytes=data_bytes(),
                    untouched_bytes=untouched_bucket_bytes(request))
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = cap.cap_bytes if hard == resource.RLIM_INFINITY else min(cap.cap_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    _active = cap
    print(f"autoscale: {cap.describe()}", flush=True)
    return cap


def lift_memory_cap() -> None:
    """Give a failed rank its memory back (the soft limit up to the hard one), so that recording why
    it failed cannot itself fail for want of memory; the cap stays named in its reason (`cap_note`)."""
    if _active is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))


def memory_cap_record(limit_bytes: int | None) -> dict | None:
    """The cap a study's ranks run under, for summary.json; None where they run uncapped."""
    if limit_bytes is None:
        return None
    return {"limit_bytes_per_rank": limit_bytes, "mechanism": MECHANISM,
            "rule": "the rank's VmData before its trial + the limit + DeepSpeed's ZeRO buckets a CPU leaves untouched"}


def capped() -> bool:
    """Whether this process runs under a memory cap (`apply_memory_cap`)."""
    return _active is not None


def cap_note() -> str:
    """What an oom reason adds under a cap: " (memory cap ... )", or "" when the rank runs uncapped."""
    return f" ({_active.describe()})" if _active is not None else ""
