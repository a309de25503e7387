"""How long a trial is predicted to take, and the refusal of a run none of whose trials could finish.

A trial runs its warm-up steps and at least `min_steps` timed ones (`engine.request.MeasurePolicy`),
so its least duration is that many optimizer steps at the cost model's step time; launching and
building the model add to it. A global batch of millions of sequences on a few ranks means
millions of accumulation steps per optimizer step: every trial would run into --timeout-per-trial
hours later, so the run is refused before the first launch, with the predicted time.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscale.engine.request import MeasurePolicy
from autoscale.errors import UserError


def least_trial_s(step_s: float, measure: MeasurePolicy) -> float:
    """The shortest a trial can be: its warm-up and its fewest timed steps."""
    return (measure.warmup_steps + measure.min_steps) * step_s


@dataclass(frozen=True)
class TrialTimeLimit:
    """--timeout-per-trial against the least a trial takes: a point predicted past it is pruned with
    its predicted time instead of launched and killed at the timeout."""

    timeout_s: float
    measure: MeasurePolicy

    def too_slow(self, step_s: float) -> bool:
        return least_trial_s(step_s, self.measure) > self.timeout_s

    def pruned_reason(self, step_s: float) -> str:
        steps = self.measure.warmup_steps + self.measure.min_steps
        return (f"pruned: predicted to take {human_duration(least_trial_s(step_s, self.measure))} for its {steps} "
                f"steps, past --timeout-per-trial {self.timeout_s:g} s")


def human_duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def refuse_trials_past_the_timeout(points, predictor, *, measure: MeasurePolicy, timeout_s: float,
                                   global_batch: int) -> None:
    """UserError when even the quickest point's least trial is predicted past `timeout_s`. Only
    points predicted to fit count (a run where none fits is refused for its memory, by its own rule);
    a point the model cannot place (predictor answers None) is given the benefit of the doubt."""
    predictions = [(point, predictor(point)) for point in points]
    if any(prediction is None for _, prediction in predictions):
        return
    timed = [(least_trial_s(prediction.time.step_s, measure), point) for point, prediction in predictions
             if prediction.fits]
    if not timed:
        return
    quickest_s, point = min(timed, key=lambda pair: pair[0])
    if quickest_s <= timeout_s:
        return
    steps = measure.warmup_steps + measure.min_steps
    raise UserError(f"every trial is predicted past --timeout-per-trial {timeout_s:g} s: the quickest "
                    f"({point.short()}, {point.grad_accum:,} accumulation steps per optimizer step) needs "
                    f"{human_duration(quickest_s)} for its {steps} steps; lower --global-batch (now {global_batch:,}) "
                    "or raise --timeout-per-trial")
