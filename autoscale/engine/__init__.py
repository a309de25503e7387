"""The engine: one trial = one model spec at one point of the space, trained and measured for real."""

from autoscale.engine.launch import run_trial
from autoscale.engine.launchers import open_runner, selectable_launchers
from autoscale.engine.pool import WarmPool
from autoscale.engine.request import MeasurePolicy, TrialRequest, TrialResult

__all__ = ["MeasurePolicy", "TrialRequest", "TrialResult", "WarmPool", "open_runner", "run_trial",
           "selectable_launchers"]
