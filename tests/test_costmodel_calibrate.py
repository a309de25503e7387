"""Calibration: parameters saved and loaded per hardware; a fit recovers known parameters."""

from __future__ import annotations

import csv
import json
from dataclasses import fields, replace

import pytest

from autoscale.costmodel import load_params, predict
from autoscale.costmodel.calibrate import calibrate_run
from autoscale.errors import UserError
from autoscale.costmodel.params import CPU_DEFAULTS, MIB, calibration_path, save_params
from autoscale.hardware import get_hardware
from autoscale.models import PRESETS
from autoscale.point import Point

KNOBS = tuple(field.name for field in fields(Point))


@pytest.fixture(autouse=True)
def calibration_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSCALE_CALIBRATION_DIR", str(tmp_path / "calibration"))
    return tmp_path / "calibration"


def write_synthetic_study(run_dir, true_params) -> None:
    """A run folder whose ok trials are the model's own predictions under `true_params`."""
    spec, cpu = PRESETS["gpt-tiny"], get_hardware("cpu")
    run_dir.mkdir()
    rows = []
    for number, (stage, micro, accum, precision) in enumerate(
            (s, m, a, p) for s in (0, 1, 2, 3) for m in (1, 4, 16) for a in (1, 2) for p in ("fp32", "bf16")):
        point = Point(zero_stage=stage, micro_batch=micro, grad_accum=accum, precision=precision)
        prediction = predict(spec, point, cpu, world_size=2, seq_len=128, params=true_params)
        rows.append({"number": number, **point.as_dict(), "tokens_per_s": prediction.time.tokens_per_s,
                     "peak_bytes": prediction.memory.peak_bytes, "status": "ok", "reason": ""})
    rows.append({"number": len(rows), **rows[0], "status": "failed", "reason": "oom: x", "tokens_per_s": "",
                 "peak_bytes": ""})
    with (run_dir / "trials.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["number", *KNOBS, "tokens_per_s", "peak_bytes", "status", "reason"])
        writer.writeheader()
        writer.writerows(rows)
    (run_dir / "summary.json").write_text(json.dumps({
        "model": {"name": spec.name}, "hardware": {"name": "cpu"}, "world_size": 2, "seq_len": 128}))


def test_load_params_falls_back_to_defaults_without_a_calibration():
    assert load_params("cpu") == CPU_DEFAULTS


def test_saved_params_are_loaded_for_their_hardware(calibration_dir):
    custom = replace(CPU_DEFAULTS, gemm_efficiency_max=0.123)
    save_params(custom, calibration_path("cpu"))
    assert load_params("cpu") == custom
    assert load_params("h100-sxm") != custom


def test_calibration_recovers_the_parameters_that_generated_the_trials(tmp_path, calibration_dir):
    truth = replace(CPU_DEFAULTS, gemm_efficiency_max=0.25, layer_overhead_s=4e-3, step_overhead_s=0.05,
                    half_precision_speed=0.6, gemm_half_tokens=120.0, host_baseline_bytes=500 * MIB,
                    zero_fixed_bytes=40 * MIB, activation_scale=1.3)
    write_synthetic_study(tmp_path / "study", truth)
    fit, path = calibrate_run(tmp_path / "study", apply="cpu")
    assert path == calibration_dir / "cpu.yaml" and load_params("cpu") == fit.params
    assert fit.throughput_error_after < 0.01 and fit.memory_error_after < 0.01
    for name in ("gemm_efficiency_max", "layer_overhead_s", "half_precision_speed", "host_baseline_bytes"):
        assert getattr(fit.params, name) == pytest.approx(getattr(truth, name), rel=0.1), name


def test_calibrate_refuses_a_plan(tmp_path):
    from autoscale.cli import main

    plan = tmp_path / "plan"
    assert main(["tune", "--backend", "model", "--hardware", "h100-sxm", "--gpus", "8", "--model", "gpt-125m",
                 "--out", str(plan)]) == 0
    with pytest.raises(UserError, match="is a plan"):
        calibrate_run(plan, output=tmp_path / "cal.yaml")
    assert not (tmp_path / "cal.yaml").exists()


def test_calibration_stays_in_the_study_folder_until_applied_and_reset_undoes_it(tmp_path, calibration_dir, capsys):
    from autoscale.cli import main

    write_synthetic_study(tmp_path / "study", replace(CPU_DEFAULTS, gemm_efficiency_max=0.25))
    assert main(["calibrate", str(tmp_path / "study")]) == 0
    assert (tmp_path / "study" / "calibration.yaml").is_file() and load_params("cpu") == CPU_DEFAULTS
    assert main(["calibrate", str(tmp_path / "study"), "--apply", "CPU"]) == 0
    assert load_params("cpu") != CPU_DEFAULTS
    assert "leave-one-out" in capsys.readouterr().out
    assert main(["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "2"]) == 0
    assert f"calibration: {calibration_dir / 'cpu.yaml'}" in " ".join(capsys.readouterr().out.split())
    assert main(["calibrate", "--reset"]) == 0
    assert load_params("cpu") == CPU_DEFAULTS and not (calibration_dir / "cpu.yaml").exists()
    assert main(["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "2"]) == 0
    assert "calibration: none for cpu" in capsys.readouterr().out


def test_a_fit_has_fewer_free_parameters_than_trials_and_reports_the_left_out_error(tmp_path):
    write_synthetic_study(tmp_path / "study", CPU_DEFAULTS)
    rows = (tmp_path / "study" / "trials.csv").read_text().splitlines()
    (tmp_path / "study" / "trials.csv").write_text("\n".join(rows[:4]) + "\n")  # 3 trials
    fit, _ = calibrate_run(tmp_path / "study")
    assert fit.observations == 3
    time_names = [n for n in fit.fitted if n in ("gemm_efficiency_max", "layer_overhead_s", "step_overhead_s",
                                                 "gemm_half_tokens", "half_precision_speed", "zero_hook_s",
                                                 "host_adam_gb_s")]
    assert len(time_names) < 3 and len(fit.fitted) - len(time_names) < 3
    assert fit.throughput_error_after < 0.01  # held-out trials, predicted from the parameters that made them


def test_calibrate_apply_refuses_another_hardware(tmp_path):
    write_synthetic_study(tmp_path / "study", CPU_DEFAULTS)
    with pytest.raises(UserError, match="can only apply to cpu"):
        calibrate_run(tmp_path / "study", apply="h100-sxm")
