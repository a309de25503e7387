"""Warm ranks that cannot start CUDA hand the study to fresh processes, once, and say so."""

from dataclasses import replace
from pathlib import Path

from autoscale.engine.fallback import FallbackToFresh
from autoscale.engine.request import TrialRequest, TrialResult
from autoscale.models import PRESETS
from autoscale.point import Point
from autoscale.workload import ScriptWorkload

CUDA_INIT_FAILURE = ("crash: rank0: RuntimeError: CUDA error: initialization error\n"
                     "CUDA kernel errors might be asynchronously reported")


def request(name: str, backend: str = "cuda") -> TrialRequest:
    return TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(zero_stage=0, micro_batch=2, grad_accum=1),
                        seq_len=32, backend=backend, nproc=1, workdir=Path("/nonexistent") / name)


class StandIn:
    """A runner that answers from a script and remembers what it ran."""

    def __init__(self, *results: TrialResult):
        self.results, self.ran = list(results), []

    def __call__(self, trial: TrialRequest) -> TrialResult:
        self.ran.append(trial.workdir.name)
        return self.results.pop(0) if self.results else TrialResult(status="ok", tokens_per_s=1.0)


def test_a_first_warm_trial_failing_to_initialise_cuda_is_rerun_fresh_and_the_study_stays_fresh():
    warm, fresh, told, closed = StandIn(TrialResult.failed(CUDA_INIT_FAILURE)), StandIn(), [], []
    runner = FallbackToFresh(warm, fresh, on_fallback=told.append, close_warm=lambda: closed.append(True))
    first, second = runner(request("trial-0")), runner(request("trial-1"))
    assert first.ok and second.ok
    assert warm.ran == ["trial-0"] and fresh.ran == ["trial-0", "trial-1"]
    assert runner.fallback == {"from": "warm", "to": "fresh", "trial_workdir": "/nonexistent/trial-0",
                               "reason": CUDA_INIT_FAILURE}
    assert len(told) == 1 and "trial-0" in told[0] and "--launcher fresh" in told[0] and "\n" not in told[0]
    assert closed == [True]


def test_a_cuda_failure_after_the_first_warm_trial_is_that_trial_s_own_result():
    later = TrialResult.failed(CUDA_INIT_FAILURE)
    warm, fresh = StandIn(TrialResult(status="ok"), later), StandIn()
    runner = FallbackToFresh(warm, fresh)
    runner(request("trial-0"))
    assert runner(request("trial-1")) is later
    assert fresh.ran == [] and runner.fallback is None


def test_other_failures_of_the_first_warm_trial_stay_warm():
    oom = TrialResult.failed("oom: rank0: OutOfMemoryError: CUDA out of memory")
    warm, fresh = StandIn(oom), StandIn()
    runner = FallbackToFresh(warm, fresh)
    assert runner(request("trial-0")) is oom
    assert fresh.ran == [] and runner.fallback is None


def test_a_script_trial_is_never_forked_warm():
    warm, fresh = StandIn(), StandIn()
    runner = FallbackToFresh(warm, fresh)
    runner(replace(request("script-0", backend="cpu"), script=ScriptWorkload(path="/nonexistent/train.py")))
    runner(request("trial-1", backend="cpu"))
    assert fresh.ran == ["script-0"] and warm.ran == ["trial-1"] and runner.fallback is None
