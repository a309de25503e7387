"""Optuna's samplers out of the box: no constraint, no seeds from the cost model, no pruning.

They show what the cost model and the memory constraint add to a plain Bayesian search.
"""

from __future__ import annotations

import optuna

from autoscale.strategies.ask_tell import AskTellStrategy


class OptunaTPE(AskTellStrategy):
    name = "optuna-tpe"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed)


class OptunaGP(AskTellStrategy):
    name = "optuna-gp"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
