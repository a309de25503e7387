"""Uniform random search without replacement: the yardstick every smarter strategy must beat."""

from __future__ import annotations

import random

from autoscale.point import Point
from autoscale.strategies.base import SearchContext, Strategy


class RandomOrder(Strategy):
    name = "random"

    def __init__(self, context: SearchContext, *, seed: int):
        super().__init__(context, seed=seed)
        self.order = random.Random(seed).sample(self.points, len(self.points))

    def propose(self) -> Point | None:
        return next((p for p in self.order if p.key() not in self.results), None)
