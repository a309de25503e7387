"""Search strategies: which point of a finite space to measure next, given what was measured.

A registry: a new strategy is a module here (a `Strategy` subclass with a `name`) plus one
`register(...)` line below. `docs/strategies.md` describes each; `benchmarks/replay.py` compares
them by the trials each needs to reach a near-best config.
"""

from __future__ import annotations

from autoscale.errors import UserError
from autoscale.strategies.base import SearchContext, Strategy
from autoscale.strategies.grid import Grid
from autoscale.strategies.model_based import DeepSpeedModelBased
from autoscale.strategies.optuna_plain import OptunaGP, OptunaTPE
from autoscale.strategies.ours import Autoscale
from autoscale.strategies.random_order import RandomOrder

STRATEGIES: dict[str, type[Strategy]] = {}


def register(strategy: type[Strategy]) -> type[Strategy]:
    STRATEGIES[strategy.name] = strategy
    return strategy


register(Grid)
register(RandomOrder)
register(DeepSpeedModelBased)
register(OptunaTPE)
register(OptunaGP)
register(Autoscale)


def make_strategy(name: str, context: SearchContext, *, seed: int) -> Strategy:
    if name not in STRATEGIES:
        raise UserError(f"unknown search strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](context, seed=seed)


__all__ = ["STRATEGIES", "SearchContext", "Strategy", "make_strategy", "register"]
