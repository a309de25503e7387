"""The shape every search strategy shares, and what a strategy may know before measuring anything.

A strategy proposes one point at a time from a finite list and is then told the outcome, as the
engine's own `TrialResult` (tokens/s and peak memory, or a failure whose kind says oom, timeout,
crash or nan). Strategies are pure: the replay benchmark and the tests drive them from a table,
a recorder or the tuner would drive them from real trials.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from autoscale.engine.request import TrialResult
from autoscale.point import Point
from autoscale.space import SearchSpace
from autoscale.costmodel.predict import Predictor


@dataclass(frozen=True, kw_only=True)
class SearchContext:
    """The candidates (a space as `SearchSpace.for_backend` left it) and, for strategies that use them,
    the cost model and the usable memory per rank (`autoscale.budget`)."""

    space: SearchSpace
    global_batch: int
    world_size: int
    predictor: Predictor | None = None
    usable_bytes: int | None = None

    def points(self) -> list[Point]:
        return self.space.points(global_batch=self.global_batch, world_size=self.world_size)


class Strategy(ABC):
    """Propose the next point to measure; learn from each outcome.

    The contract, checked for every registered strategy in tests/test_strategies.py: `propose` never
    returns a point already told; called until it returns None (telling each outcome in between),
    it returns every point it is willing to launch exactly once. Calls alternate: propose, tell.
    """

    name: ClassVar[str]

    def __init__(self, context: SearchContext, *, seed: int):
        self.context, self.seed = context, seed
        self.points = context.points()
        self.results: dict[tuple, TrialResult] = {}

    @abstractmethod
    def propose(self) -> Point | None:
        """The next point to launch, or None when nothing is left to try."""

    def tell(self, point: Point, result: TrialResult) -> None:
        self.results[point.key()] = result
        self.learn(point, result)

    def learn(self, point: Point, result: TrialResult) -> None:
        """Strategies that model the outcomes update their model here."""

    def unmeasured(self) -> list[Point]:
        return [p for p in self.points if p.key() not in self.results]

