"""Fitting the GPU efficiencies to published runs, and scoring them on runs held out.

One parameter set per GPU family (`Hardware.family`: chips that differ only in memory or power
share it). A handful of efficiencies are fitted (`FITTED`) by scipy's least_squares on the log
ratio of predicted to measured tokens/s per GPU, searched in log space with a weak pull towards
the defaults, every run weighted alike (weighting sources alike, 1/sqrt(rows) each, made the
leave-one-source-out error worse when tried: 11.3% against 9.1% median). Memory is never fitted
here, so its errors are out of sample everywhere.
Leave-one-source-out: the parameters are fitted on every other source and scored on the one held
out, the figure that says how the model does on data it has not seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares

from autoscale.costmodel.gpu_runs import PublishedRun
from autoscale.costmodel.params import GPU_DEFAULTS, EfficiencyParams
from autoscale.costmodel.predict import Prediction, predict
from autoscale.errors import UserError
from autoscale.point import Point

FITTED = ("gemm_efficiency_max", "attention_efficiency", "link_efficiency", "inter_node_link_efficiency",
          "comm_overlap", "fp8_matmul_speedup")
BOUNDS = {"gemm_efficiency_max": (0.2, 1.0), "attention_efficiency": (0.05, 1.0), "link_efficiency": (0.1, 1.0),
          "inter_node_link_efficiency": (0.05, 1.0), "comm_overlap": (0.05, 1.0), "fp8_matmul_speedup": (1.0, 2.0)}
PRIOR_WEIGHT = 0.1  # per parameter, in log units, against ~300 residuals of order 0.1


@dataclass(frozen=True, kw_only=True)
class RunPrediction:
    run: PublishedRun
    point: Point
    prediction: Prediction
    fits: bool  # some candidate is predicted to fit

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.prediction.time.tokens_per_s / self.run.world_size

    @property
    def error(self) -> float:
        return self.tokens_per_s_per_gpu / self.run.measured_tokens_per_s_per_gpu - 1

    @property
    def memory_error(self) -> float | None:
        if self.run.measured_peak_bytes is None:
            return None
        return self.prediction.memory.peak_bytes / self.run.measured_peak_bytes - 1


def layout_refusal(run: PublishedRun) -> str | None:
    """Why the run cannot be laid out (None when it can): its engine or the arithmetic refused every
    candidate (`PublishedRun.refusals`), or `predict` cannot place it. Such runs are reported, not scored."""
    if not run.candidates:
        return run.refusals[0] if run.refusals else "no candidate layout"
    try:
        predict(run.spec, run.candidates[0], run.hardware, world_size=run.world_size, seq_len=run.seq_len)
    except UserError as error:
        return str(error)
    return None


def predict_run(run: PublishedRun, params: EfficiencyParams) -> RunPrediction:
    """The run at its fastest candidate predicted to fit (its fastest overall when none fits)."""
    predicted = [(point, predict(run.spec, point, run.hardware, world_size=run.world_size, seq_len=run.seq_len,
                                 params=params)) for point in run.candidates]
    fitting = [pair for pair in predicted if pair[1].fits]
    point, prediction = max(fitting or predicted, key=lambda pair: pair[1].time.tokens_per_s)
    return RunPrediction(run=run, point=point, prediction=prediction, fits=bool(fitting))


def family_of(run: PublishedRun) -> str:
    return run.hardware.family or run.hardware.name


def fit_family(runs: list[PublishedRun], start: EfficiencyParams = GPU_DEFAULTS) -> EfficiencyParams:
    """Least squares on log(predicted / measured) tokens/s per GPU over `runs` (one family)."""
    names = [name for name in FITTED
             if name != "fp8_matmul_speedup" or any(p.precision == "fp8" for r in runs for p in r.candidates)]
    if not runs:
        return start
    measured = np.log([run.measured_tokens_per_s_per_gpu for run in runs])
    low, high = (np.log([BOUNDS[name][i] for name in names]) for i in (0, 1))
    x0 = np.clip(np.log([getattr(start, name) for name in names]), low, high)

    def with_x(x: np.ndarray) -> EfficiencyParams:
        return replace(start, **{name: float(math.exp(v)) for name, v in zip(names, x)})

    def residuals(x: np.ndarray) -> np.ndarray:
        params = with_x(x)
        predicted = np.log([predict_run(run, params).tokens_per_s_per_gpu for run in runs])
        return np.concatenate([predicted - measured, PRIOR_WEIGHT * (x - x0)])

    solution = least_squares(residuals, x0, bounds=(low, high), diff_step=1e-3)
    return with_x(solution.x)


def fit_families(runs: list[PublishedRun]) -> dict[str, EfficiencyParams]:
    families = sorted({family_of(run) for run in runs})
    return {family: fit_family([run for run in runs if family_of(run) == family]) for family in families}


FamilyParams = dict[str, EfficiencyParams]


def leave_one_source_out(runs: list[PublishedRun]) -> tuple[list[RunPrediction], dict[str, FamilyParams]]:
    """Each run predicted with parameters fitted on the other sources only (a family no other
    source measured falls back to the defaults); also the parameters used per held-out source."""
    predictions, used = [], {}
    for source in sorted({run.source for run in runs}):
        training = [run for run in runs if run.source != source]
        fitted = fit_families(training)
        used[source] = fitted
        for run in runs:
            if run.source == source:
                predictions.append(predict_run(run, fitted.get(family_of(run), GPU_DEFAULTS)))
    return predictions, used
