"""Warm ranks with a way out: if CUDA cannot start in a forked rank, the study goes on in fresh ones.

The warm pool forks its trials from a server that must never have initialised the CUDA driver.
Should that still happen on some machine (a driver, a library or a site hook that touches CUDA at
import), every warm trial would fail the same way and the study would learn nothing. So the first
warm trial on each backend is watched: if it failed with a CUDA initialisation error, that trial
is rerun with fresh processes and every later trial runs fresh too.
"""

from __future__ import annotations

from typing import Callable

from autoscale.engine.outcome import is_cuda_init_failure
from autoscale.engine.request import TrialRequest, TrialResult

Runner = Callable[[TrialRequest], TrialResult]


class FallbackToFresh:
    """Callable like `run_trial`. `fallback` is None until the switch, then a dict saying what
    happened: `from`, `to` (launcher names), `trial_workdir` (the trial rerun) and `reason` (the
    warm trial's failure), for the study's summary. `on_fallback` gets the same as one line."""

    def __init__(self, warm: Runner, fresh: Runner, *, on_fallback: Callable[[str], None] | None = None,
                 close_warm: Callable[[], None] | None = None):
        self.warm, self.fresh = warm, fresh
        self.on_fallback, self.close_warm = on_fallback, close_warm
        self.fallback: dict | None = None
        self._backends_tried: set[str] = set()

    @property
    def pool_start_s(self) -> float:
        """The warm runner's start-up seconds (`WarmPool.pool_start_s`), for the study's timing."""
        return getattr(self.warm, "pool_start_s", 0.0)

    def __call__(self, request: TrialRequest) -> TrialResult:
        if self.fallback is not None or request.script is not None:  # a user's script is never forked warm
            return self.fresh(request)
        first_on_backend = request.backend not in self._backends_tried
        self._backends_tried.add(request.backend)
        result = self.warm(request)
        if not (first_on_backend and is_cuda_init_failure(result)):
            return result
        self.fallback = {"from": "warm", "to": "fresh", "trial_workdir": str(request.workdir),
                         "reason": result.reason}
        if self.close_warm is not None:
            self.close_warm()
        if self.on_fallback is not None:
            first_line = result.reason.splitlines()[0]
            self.on_fallback(f"warm ranks could not initialise CUDA ({first_line}); rerunning "
                             f"{request.workdir.name} and the rest of the study with --launcher fresh")
        return self.fresh(request)
