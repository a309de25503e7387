"""Measuring a rank: its peak memory, and a step-time estimate that knows when it is stable."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(backend: str) -> None:
    """Start a fresh peak: the CUDA allocator's, or the kernel's high-water mark of resident memory.

    Writing 5 to /proc/self/clear_refs resets VmHWM (Linux >= 4.0, proc(5)), so a process that
    serves several trials measures each one on its own.
    """
    if backend == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass  # not permitted: the peak then covers the whole process, which a fresh one is anyway


def peak_memory_bytes(backend: str) -> int:
    """CUDA: the allocator's peak reserved bytes (what must fit). CPU: peak resident set (VmHWM)."""
    if backend == "cuda":
        return int(torch.cuda.max_memory_reserved())
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def relative_standard_error(samples: list[float]) -> float:
    """Standard error of the mean over the mean; infinite for fewer than two samples."""
    if len(samples) < 2:
        return math.inf
    mean = statistics.fmean(samples)
    return statistics.stdev(samples) / math.sqrt(len(samples)) / mean if mean > 0 else math.inf
