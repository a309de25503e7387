"""From what a trial's ranks left behind to one `TrialResult`: shared by every launcher.

Whatever started the ranks (fresh processes, warm forks, DeepSpeed's launcher across nodes), the
trial ends the same three ways: rank 0's result file, a timeout, or a failure whose reason is read
first from the ranks' error files (`rank<r>.error.json`, written by `rank.record_failure`), then
from how a rank died.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from autoscale.engine.request import TrialRequest, TrialResult

# Allocation failures that reach Python as RuntimeError text rather than torch.OutOfMemoryError:
# NCCL's "Failed to CUDA calloc", cuBLAS's workspace allocation, the CUDA runtime's error name.
OOM_MARKERS = ("out of memory", "can't allocate memory", "cublas_status_alloc_failed", "cudaerrormemoryallocation",
               "failed to cuda calloc")


def mentions_oom(text: str) -> bool:
    """Whether an error's text (a message, a log's last line) names an allocation failure."""
    lowered = text.lower()
    return any(marker in lowered for marker in OOM_MARKERS)


CUDA_INIT_FAILURE_MARKERS = (
    "cannot re-initialize cuda in forked subprocess",
    "cuda error: initialization error",
    "cudaerrorinitializationerror",
    "cuda driver initialization failed",
    "cuda call failed lazily at initialization",
    "the fork server initialised cuda",
)


def collected(result_path: Path, *, wall_s: float) -> TrialResult:
    """Rank 0's result, with the wall time the launcher measured around the whole trial."""
    return TrialResult.from_dict({**json.loads(result_path.read_text()), "wall_s": wall_s})


def timed_out(request: TrialRequest, *, wall_s: float) -> TrialResult:
    return TrialResult.failed(f"timeout: no result after {request.timeout_s:.0f} s", wall_s=wall_s)


def reason_from_error_files(workdir: Path) -> str | None:
    """The first rank's own account of its failure, `<kind>: rank<r>: <message>`; None when no rank wrote one."""
    errors = sorted(workdir.glob("rank*.error.json"))
    if not errors:
        return None
    record = json.loads(errors[0].read_text())
    return f"{record['kind']}: {errors[0].name.split('.')[0]}: {record['message']}"


def reason_from_signal(rank: int, signum: int) -> str:
    """SIGKILL from outside is what the kernel's OOM killer sends, so it reads as oom; other signals as crash."""
    name = signal.Signals(signum).name
    if signum == signal.SIGKILL:
        return f"oom: rank{rank} killed by {name} (likely the kernel's OOM killer)"
    return f"crash: rank{rank} killed by {name}"


def last_line(path: Path) -> str:
    try:
        return last_line_of(path.read_text(errors="replace"))
    except OSError:
        return ""


def last_line_of(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def is_cuda_init_failure(result: TrialResult) -> bool:
    """A failure of CUDA's initialisation in a rank, which says nothing about the config it ran."""
    reason = result.reason.lower()
    return not result.ok and any(marker in reason for marker in CUDA_INIT_FAILURE_MARKERS)
