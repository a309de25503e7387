"""Measuring a rank: its peak memory, and a step-time estimate that knows when it is stable."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from autoscale.probe import resident_peak_bytes

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
    """CUDA: the allocator's peak reserved bytes. CPU: peak resident set (VmHWM)."""
    if backend == "cuda":
        return int(torch.cuda.max_memory_reserved())
    return resident_peak_bytes()


def relative_standard_error(samples: list[float]) -> float:
    """Standard error of the mean over the mean; infinite for fewer than two samples."""
    if len(samples) < 2:
        return math.inf
    mean = statistics.fmean(samples)
    return statistics.stdev(samples) / math.sqrt(len(samples)) / mean if mean > 0 else math.inf


def load_nvml() -> ModuleType | None:
    """NVML's Python binding (package nvidia-ml-py, module pynvml), initialised; None where it is
    not installed or finds no driver: the allocator's figure then stands alone."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def nvml_process_used_bytes(nvml: ModuleType, device_uuid: str, pid: int) -> int | None:
    """Device memory NVML charges to process `pid` on the device with this UUID: the CUDA context,
    NCCL's buffers and the allocator's reserve together, as `nvidia-smi` shows it. None where NVML
    cannot say (the process is not listed, as in a container with its own PID namespace, or the
    driver withholds per-process figures, as on MIG slices)."""
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(device_uuid)
        processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError:
        return None
    used = [p.usedGpuMemory for p in processes if p.pid == pid and p.usedGpuMemory is not None]
    return int(max(used)) if used else None


def cuda_device_uuid(device_index: int) -> str:
    """The NVML UUID (`GPU-...`) of a CUDA device; CUDA numbers devices after CUDA_VISIBLE_DEVICES,
    NVML does not, so the UUID is what the two agree on."""
    uuid = str(torch.cuda.get_device_properties(device_index).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


@dataclass
class DevicePeak:
    """A rank's peak device memory as a GPU user sees it, sampled after each step.

    `peak_bytes` is the figure held against the memory limit: NVML's per-process figure where NVML
    answers, else the allocator's. `allocator_bytes` is the caching allocator's peak reserved,
    which leaves out the CUDA context and NCCL's buffers.
    """

    nvml: ModuleType | None
    device_uuid: str | None
    pid: int
    nvml_bytes: int | None = None

    @classmethod
    def for_backend(cls, backend: str, device_index: int) -> "DevicePeak":
        if backend != "cuda":
            return cls(nvml=None, device_uuid=None, pid=os.getpid())
        nvml = load_nvml()
        return cls(nvml=nvml, device_uuid=cuda_device_uuid(device_index) if nvml else None, pid=os.getpid())

    def sample(self) -> None:
        if self.nvml is None or self.device_uuid is None:
            return
        used = nvml_process_used_bytes(self.nvml, self.device_uuid, self.pid)
        if used is not None:
            self.nvml_bytes = max(used, self.nvml_bytes or 0)

    def figures(self, backend: str) -> tuple[int, int | None]:
        """(the peak held against the limit, the allocator's peak or None off CUDA)."""
        measured = peak_memory_bytes(backend)
        if backend != "cuda":
            return measured, None
        return (self.nvml_bytes if self.nvml_bytes is not None else measured), measured
