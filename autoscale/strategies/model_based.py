"""DeepSpeed-autotuner-like model-based search: a few random points, then a learned ranking.

Follows `deepspeed/autotuning/tuner/model_based_tuner.py` and `cost_model.py`: an XGBoost model
with the pairwise-ranking objective and DeepSpeed's hyper-parameters is fitted on the numeric
features of every measured point (a failed one scores 0, throughput is divided by the best seen),
refitted after each measurement, and the best-ranked unmeasured point is measured next.
Differences, on purpose: the start is `INIT_POINTS` seeded random points (DeepSpeed's code pins
the first to index 0 and overwrites its start list after one measurement), ties in the ranking
are broken at random rather than by reverse index, and features are the `Point`'s knobs rather
than DeepSpeed's flattened ds_config (the same information). DeepSpeed's 20% random exploration
is left out: in its code that branch never changes the chosen index.

xgboost is an optional dependency of the benchmark only (`pip install xgboost`), imported at
first use.
"""

from __future__ import annotations

import numpy as np

from autoscale.engine.request import TrialResult
from autoscale.errors import UserError
from autoscale.point import POINT_FIELDS, Point, knob_choices
from autoscale.strategies.base import SearchContext, Strategy

INIT_POINTS = 2  # DeepSpeed's INIT_NUM
XGB_RANK_PARAMS = {"max_depth": 3, "gamma": 0.0001, "min_child_weight": 1, "subsample": 1.0, "eta": 0.3,
                   "lambda": 1.0, "alpha": 0, "objective": "rank:pairwise", "verbosity": 0}  # DeepSpeed's "rank"


def _xgboost():
    try:
        import xgboost
    except ImportError:
        raise UserError("strategy 'ds-model-based' needs xgboost, an optional dependency of the benchmark: "
                        "pip install xgboost") from None
    return xgboost


def features(point: Point) -> list[float]:
    """The point's fields as numbers, as DeepSpeed feeds the numeric values of a ds_config: an
    integer as it is, a named choice by its index."""
    return [value if isinstance(value, int) else knob_choices(name).index(value)
            for name in POINT_FIELDS for value in (getattr(point, name),)]


class DeepSpeedModelBased(Strategy):
    name = "ds-model-based"

    def __init__(self, context: SearchContext, *, seed: int):
        super().__init__(context, seed=seed)
        self.xgb = _xgboost()
        self.rng = np.random.default_rng(seed)
        self.features = np.array([features(p) for p in self.points], dtype=np.float32)
        self.order = list(self.rng.permutation(len(self.points)))  # random until the first fit

    def propose(self) -> Point | None:
        return next((self.points[i] for i in self.order if self.points[i].key() not in self.results), None)

    def learn(self, point: Point, result: TrialResult) -> None:
        if len(self.results) < INIT_POINTS:
            return
        index = {p.key(): i for i, p in enumerate(self.points)}
        measured = [index[key] for key in self.results]
        scores = np.array([r.tokens_per_s if r.ok and r.tokens_per_s else 0.0 for r in self.results.values()],
                          dtype=np.float32)
        scores /= max(float(scores.max()), 1e-9)
        shuffled = self.rng.permutation(len(measured))
        train = self.xgb.DMatrix(self.features[measured][shuffled], scores[shuffled])
        booster = self.xgb.train({**XGB_RANK_PARAMS, "seed": int(self.seed), "nthread": 1}, train)
        estimates = booster.predict(self.xgb.DMatrix(self.features))
        tie_break = self.rng.random(len(self.points))
        self.order = list(np.lexsort((tie_break, -estimates)))
