"""The engine: one trial = one model spec at one point of the space, trained and measured for real."""

from autoscale.engine.launch import run_trial
from autoscale.engine.pool import WarmPool
from autoscale.engine.request import MeasurePolicy, TrialRequest, TrialResult

__all__ = ["MeasurePolicy", "TrialRequest", "TrialResult", "WarmPool", "run_trial"]
