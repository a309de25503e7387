"""The shape every search strategy shares, and what a strategy may know before measuring anything.

A strategy proposes one point at a time from a finite list and is then told the outcome, as the
engine's own `TrialResult` (tokens/s and peak memory, or a failure whose kind says oom, timeout,
crash or nan). Strategies are pure: the replay benchmark and the tests drive them from a table,
a recorder or the tuner would drive them from real trials.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

from autoscale.engine.request import TrialResult
from autoscale.point import KNOB_NAMES, Point, get_knob
from autoscale.space import SearchSpace
from autoscale.costmodel.predict import Predictor
from autoscale.trial_time import TrialTimeLimit


def knob_values(knobs: Mapping) -> tuple:
    """A point's identity among the candidates of a list space: its knobs (a knob left out, as
    define-by-run leaves offload out at ZeRO-0, at its default); grad_accum is derived, never searched."""
    return tuple(knobs.get(name, get_knob(name).default) for name in KNOB_NAMES)


@dataclass(frozen=True, kw_only=True)
class SearchContext:
    """The candidates and, for strategies that use them, the cost model and the usable memory per
    rank (`autoscale.budget`).

    `listed` None: the candidates are every point of the space (as `SearchSpace.for_backend` left it)
    that can be laid out. A tuple: a list space, such as a published sweep that measured only some
    combinations; its points are the only candidates, and `space.choices` holds their distinct
    values, which define-by-run samplers suggest from (`candidate` says whether a suggestion is one)."""

    space: SearchSpace
    global_batch: int
    world_size: int
    predictor: Predictor | None = None
    usable_bytes: int | None = None
    time_limit: TrialTimeLimit | None = None  # autoscale.trial_time: points predicted past it are pruned
    listed: tuple[Point, ...] | None = None
    candidates: tuple[Point, ...] = field(init=False, repr=False)
    _by_knobs: dict[tuple, Point] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        candidates = self.listed if self.listed is not None else \
            tuple(self.space.points(global_batch=self.global_batch, world_size=self.world_size))
        object.__setattr__(self, "candidates", candidates)
        object.__setattr__(self, "_by_knobs", {knob_values(p.as_dict()): p for p in candidates})

    def points(self) -> list[Point]:
        return list(self.candidates)

    def candidate(self, knobs: Mapping) -> Point | None:
        """The candidate with these knob values (grad_accum as the candidate has it), or None."""
        return self._by_knobs.get(knob_values(knobs))


class Strategy(ABC):
    """Propose the next point to measure; learn from each outcome.

    The contract, checked for every registered strategy in tests/test_strategies.py: `propose` never
    returns a point already told, nor one outside the context's candidates; called until it returns
    None (telling each outcome in between), it returns every point it is willing to launch exactly
    once. Calls alternate: propose, tell.
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
