"""The kinds of failed trial, one vocabulary for the engine that names them (a reason's prefix:
`oom: ...`), the results that store them and the report that files them."""

from enum import StrEnum


class FailureKind(StrEnum):
    OOM = "oom"  # an allocation failed, or the kernel's OOM killer ended a rank
    TIMEOUT = "timeout"  # outlived --timeout-per-trial; its whole process group was killed
    CRASH = "crash"  # a rank raised or died otherwise
    NAN = "nan"  # a NaN loss
    DIVERGED = "diverged"  # trained, but did not reproduce the reference run (engine.numerics)
    INTERRUPTED = "interrupted"  # Ctrl-C cut it; --resume measures it again
    PREEMPTED = "preempted"  # Slurm ended the step (engine.slurm runs it once more)
    NODE_FAILURE = "node-failure"
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # never launched: the cost model predicts it does not fit
    INVALID = "invalid"  # the layout rules refuse it


def failure_kind_of(reason: str) -> FailureKind | None:
    """The kind a reason names by its prefix (`oom: ...`), or None."""
    prefix = reason.split(":", 1)[0].strip().lower() if ":" in reason else ""
    return FailureKind(prefix) if prefix in FailureKind._value2member_map_ else None
