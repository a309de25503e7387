"""Fitting the efficiency parameters to measured trials (`autoscale calibrate runs/<study>`).

The `ok` rows of a run folder's trials.csv (knobs, measured tokens_per_s and peak_bytes) and its
summary.json (model, hardware, world size, sequence length; docs/run-folder.md) are predicted
with trial parameters; scipy's least_squares minimises the log-ratio of predicted to measured
throughput and peak memory over the parameters, themselves searched in log space, with a weak
pull towards the starting values so parameters the trials cannot tell apart stay where they were.
Throughput and memory parameters are fitted separately: they share no parameter.

Each fit has fewer free parameters than trials (the rest keep their values), and the error reported
is leave-one-out: each trial predicted by the parameters fitted to the others, so a fit that only
memorised its trials shows it. The parameters are written into the study folder; only `--apply`
makes later predictions for the hardware use them, and `calibrate --reset` undoes that.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from autoscale.costmodel.params import MIB, EfficiencyParams, calibration_path, default_params, save_params
from autoscale.costmodel.predict import predict
from autoscale.errors import UserError
from autoscale.hardware import Hardware, get_hardware
from autoscale.models import resolve_model
from autoscale.models.spec import ModelSpec
from autoscale.point import Point
from autoscale.userfiles import writing_to

PRIOR_WEIGHT = 0.003  # per parameter, in log units, against residuals of order 0.01-0.1
BOUNDS = {  # (low, high) of each fitted parameter
    "gemm_efficiency_max": (0.01, 1.0), "gemm_half_tokens": (1.0, 1e5), "gemm_half_width": (1.0, 1e5),
    "half_precision_speed": (0.05, 4.0), "layer_overhead_s": (1e-7, 1.0), "step_overhead_s": (1e-6, 10.0),
    "zero_hook_s": (1e-7, 0.1), "host_adam_gb_s": (0.01, 1e4),
    "host_baseline_bytes": (1 * MIB, 64 * 2**30), "device_context_bytes": (1 * MIB, 64 * 2**30),
    "activation_scale": (0.1, 10.0), "zero_fixed_bytes": (1 * MIB, 16 * 2**30),
    "zero_startup_bytes_per_param": (0.01, 64.0), "zero3_startup_bytes_per_param": (0.01, 64.0),
}


@dataclass(frozen=True, kw_only=True)
class Observation:
    point: Point
    tokens_per_s: float
    peak_bytes: float


@dataclass(frozen=True, kw_only=True)
class Study:
    spec: ModelSpec
    hardware: Hardware
    world_size: int
    seq_len: int
    observations: tuple[Observation, ...]


@dataclass(frozen=True, kw_only=True)
class Fit:
    params: EfficiencyParams
    fitted: tuple[str, ...]
    throughput_error_before: float  # median |predicted / measured - 1|, default parameters
    throughput_error_after: float  # the same, leave-one-out (cross-validated) with fitted parameters
    memory_error_before: float
    memory_error_after: float
    observations: int = 0


def read_study(run_dir: Path) -> Study:
    """The measured `ok` trials of a run folder and the setting they were measured in."""
    trials_path, summary_path = run_dir / "trials.csv", run_dir / "summary.json"
    for path in (trials_path, summary_path):
        if not path.exists():
            raise UserError(f"{str(run_dir)!r} is not a run folder: {path.name} is missing")
    summary = json.loads(summary_path.read_text())
    if summary.get("predicted"):
        raise UserError(f"{str(run_dir)!r} is a plan (tune --backend model): its figures are the cost model's own "
                        "predictions, and fitting the model to them teaches it nothing; calibrate from a measured study")
    try:
        spec = resolve_model(summary["model"]["name"])
        hardware = get_hardware(summary["hardware"]["name"])
        world_size, seq_len = int(summary["world_size"]), int(summary["seq_len"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{summary_path}: missing or bad field ({error})") from None
    observations = []
    with trials_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("status") != "ok" or not row.get("tokens_per_s") or not row.get("peak_bytes"):
                continue
            point = Point.from_row(row)
            observations.append(Observation(point=point, tokens_per_s=float(row["tokens_per_s"]),
                                            peak_bytes=float(row["peak_bytes"])))
    if not observations:
        raise UserError(f"{trials_path} has no ok trials to calibrate on")
    return Study(spec=spec, hardware=hardware, world_size=world_size, seq_len=seq_len,
                 observations=tuple(observations))


def _predictions(study: Study, params: EfficiencyParams) -> tuple[np.ndarray, np.ndarray]:
    tokens, peaks = [], []
    for observation in study.observations:
        prediction = predict(study.spec, observation.point, study.hardware, world_size=study.world_size,
                             seq_len=study.seq_len, params=params)
        tokens.append(prediction.time.tokens_per_s)
        peaks.append(prediction.memory.peak_bytes)
    return np.array(tokens), np.array(peaks)


def _fit(study: Study, start: EfficiencyParams, names: list[str], which: int) -> EfficiencyParams:
    if not names:
        return start
    measured = np.log([(o.tokens_per_s, o.peak_bytes)[which] for o in study.observations])
    x0 = np.log([max(getattr(start, name), BOUNDS[name][0]) for name in names])
    low, high = np.log([BOUNDS[name][0] for name in names]), np.log([BOUNDS[name][1] for name in names])
    x0 = np.clip(x0, low, high)

    def residuals(x: np.ndarray) -> np.ndarray:
        params = replace(start, **{name: float(math.exp(v)) for name, v in zip(names, x)})
        predicted = np.log(_predictions(study, params)[which])
        return np.concatenate([predicted - measured, PRIOR_WEIGHT * (x - x0)])

    solution = least_squares(residuals, x0, bounds=(low, high), x_scale=1.0)
    return replace(start, **{name: float(math.exp(v)) for name, v in zip(names, solution.x)})


def _median_error(predicted: np.ndarray, measured: list[float]) -> float:
    return float(np.median(np.abs(predicted / np.array(measured) - 1)))


def parameters_to_fit(study: Study) -> tuple[list[str], list[str]]:
    """(throughput, memory) parameter names the trials can inform."""
    points = [o.point for o in study.observations]
    time_names = ["gemm_efficiency_max", "layer_overhead_s", "step_overhead_s"]
    if len({p.micro_batch for p in points}) > 1:
        time_names.append("gemm_half_tokens")
    if {p.precision for p in points} - {"fp32"} and "fp32" in {p.precision for p in points}:
        time_names.append("half_precision_speed")
    if {p.zero_stage for p in points} & {2, 3} and len({p.zero_stage for p in points}) > 1:
        time_names.append("zero_hook_s")
    if {p.offload for p in points} == {"none", "cpu"}:
        time_names.append("host_adam_gb_s")
    on_cpu = study.hardware.name == "cpu"
    memory_names = ["host_baseline_bytes" if on_cpu else "device_context_bytes", "activation_scale"]
    stages = {p.zero_stage for p in points}
    if on_cpu and stages & {1, 2, 3}:
        memory_names.append("zero_fixed_bytes")
        if stages & {1, 2}:
            memory_names.append("zero_startup_bytes_per_param")
        if 3 in stages:
            memory_names.append("zero3_startup_bytes_per_param")
    free = len(points) - 1  # fewer free parameters than trials, in the order above (most telling first)
    return time_names[:free], memory_names[:free]


def _fit_both(study: Study, start: EfficiencyParams, time_names: list[str], memory_names: list[str]) -> EfficiencyParams:
    return _fit(study, _fit(study, start, time_names, 0), memory_names, 1)


def _left_out_predictions(study: Study, start: EfficiencyParams, time_names, memory_names) -> np.ndarray:
    """Each trial's (tokens/s, peak bytes) predicted by parameters fitted to the other trials."""
    predicted = []
    for index in range(len(study.observations)):
        others = replace(study, observations=study.observations[:index] + study.observations[index + 1:])
        held_out = replace(study, observations=(study.observations[index],))
        params = _fit_both(others, start, time_names, memory_names)
        tokens, peaks = _predictions(held_out, params)
        predicted.append((tokens[0], peaks[0]))
    return np.array(predicted)


def fit_study(study: Study, start: EfficiencyParams | None = None) -> Fit:
    if len(study.observations) < 2:
        raise UserError("calibration needs at least 2 ok trials (one to fit, one to check the fit on); "
                        f"the study has {len(study.observations)}")
    start = start or default_params(study.hardware.name)
    time_names, memory_names = parameters_to_fit(study)
    fitted = _fit_both(study, start, time_names, memory_names)
    measured_tokens = [o.tokens_per_s for o in study.observations]
    measured_peaks = [o.peak_bytes for o in study.observations]
    before, left_out = _predictions(study, start), _left_out_predictions(study, start, time_names, memory_names)
    return Fit(params=fitted, fitted=tuple(time_names + memory_names), observations=len(study.observations),
               throughput_error_before=_median_error(before[0], measured_tokens),
               throughput_error_after=_median_error(left_out[:, 0], measured_tokens),
               memory_error_before=_median_error(before[1], measured_peaks),
               memory_error_after=_median_error(left_out[:, 1], measured_peaks))


CALIBRATION_FILE = "calibration.yaml"  # in the study folder: seen, and used by nothing until applied


def calibrate_run(run_dir: Path, *, output: Path | None = None, apply: str | None = None) -> tuple[Fit, Path]:
    """Fit the run folder's trials and save the parameters into it (or to `output`); `apply`, the
    study's hardware name, saves them where later predictions for that hardware read them."""
    study = read_study(Path(run_dir))
    if apply is not None and apply.lower() != study.hardware.name:
        raise UserError(f"--apply {apply}: this study ran on {study.hardware.name}, so its calibration can only "
                        f"apply to {study.hardware.name} (--apply {study.hardware.name})")
    path = calibration_path(study.hardware.name) if apply else (output or Path(run_dir) / CALIBRATION_FILE)
    with writing_to(path):  # before the fit: a path that cannot be written fails at once
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
    fit = fit_study(study)
    note = (f"fitted to {len(study.observations)} trials of {study.spec.name} in {run_dir} "
            f"({study.world_size} ranks, seq {study.seq_len})")
    with writing_to(path):
        save_params(fit.params, path, note=note)
    return fit, path
