"""Grid search in the space's order, as DeepSpeed's autotuner walks its grid.

`SearchSpace.points()` varies ZeRO stage outermost and micro-batch next, the way DeepSpeed's
autotuner sweeps micro-batch sizes inside each ZeRO stage (`Autotuner.tune_space`). Deterministic:
the seed changes nothing.
"""

from __future__ import annotations

from autoscale.point import Point
from autoscale.strategies.base import Strategy


class Grid(Strategy):
    name = "grid"

    def propose(self) -> Point | None:
        return next(iter(self.unmeasured()), None)
