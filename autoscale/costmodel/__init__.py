"""The cost model: the analytical twin of the engine. Pure functions of a ModelSpec, a Point and
a Hardware entry; only `params` reads and writes calibration files.

    prediction = predict(spec, point, hardware, world_size=8, seq_len=2048)
    prediction.fits, prediction.memory.peak_bytes, prediction.time.tokens_per_s
"""

from autoscale.costmodel.memory import MemoryBreakdown
from autoscale.costmodel.params import EfficiencyParams, default_params, load_params, save_params
from autoscale.costmodel.planner import ClusterPlan, plan_cluster, rank_points, rank_predictions, worth_the_risk
from autoscale.costmodel.predict import Prediction, Predictor, point_predictor, predict
from autoscale.costmodel.reference import deepspeed_model_states_bytes
from autoscale.costmodel.time import TimeBreakdown

__all__ = ["ClusterPlan", "EfficiencyParams", "MemoryBreakdown", "Prediction", "Predictor", "TimeBreakdown",
           "default_params", "deepspeed_model_states_bytes", "load_params", "plan_cluster", "point_predictor", "predict",
           "rank_points", "rank_predictions", "save_params", "worth_the_risk"]
