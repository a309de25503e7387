"""Suites and baselines are checked before any trial runs; bad input is one line and exit code 2."""

import json
from pathlib import Path

import pytest

from autoscale.bench.record import BenchRecord, CaseSamples, environment
from autoscale.bench.suite import load_suite
from autoscale.cli import main
from autoscale.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "ci" / "suites"
MINIMAL = """
name: tiny
backend: cpu
configs:
  - {name: a, model: gpt-tiny, seq_len: 32, steps: 2, point: {micro_batch: 2}}
"""


def write(tmp_path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["cpu-smoke.yaml", "nightly.yaml"])
def test_the_shipped_suites_load(name):
    suite = load_suite(SUITES / name)
    assert suite.cases and all(case.repeats >= 4 for case in suite.cases)


def test_steps_fix_the_measure_policy(tmp_path):
    suite = load_suite(write(tmp_path, MINIMAL))
    case = suite.cases[0]
    assert case.measure.min_steps == case.measure.max_steps == 2 and case.measure.target_rse == 0
    assert (case.point.zero_stage, case.point.micro_batch, case.point.grad_accum) == (0, 2, 1)
    assert suite.threshold("a", "step_s", 0.07) == 0.07


def test_thresholds_per_config_win_over_the_suite_and_the_flag(tmp_path):
    text = MINIMAL.replace("backend: cpu", "backend: cpu\nthresholds: {step_s: 0.1, peak_bytes: 0.02}")
    text = text.replace("point:", "thresholds: {step_s: 0.2}, point:")
    suite = load_suite(write(tmp_path, text))
    assert suite.threshold("a", "step_s", 0.05) == 0.2
    assert suite.threshold("a", "peak_bytes", 0.05) == 0.02
    assert suite.threshold("a", "tokens_per_s", 0.05) == 0.05


def test_a_ds_config_file_gives_the_point(tmp_path):
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "train_batch_size": 16,
              "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}
    (tmp_path / "ds.json").write_text(json.dumps(config))
    text = MINIMAL.replace("point: {micro_batch: 2}", "ds_config: ds.json, point: {checkpointing: full}")
    case = load_suite(write(tmp_path, text)).cases[0]
    assert case.ds_config == config
    assert (case.point.zero_stage, case.point.micro_batch, case.point.grad_accum, case.point.precision,
            case.point.checkpointing) == (2, 4, 2, "bf16", "full")


@pytest.mark.parametrize("text, message", [
    ("name: x\nconfigs: [\n", "not valid YAML"),
    (MINIMAL.replace("steps: 2", "steps: 2, colour: red"), "colour"),
    (MINIMAL + "surprise: 1\n", "surprise"),
    (MINIMAL.replace("gpt-tiny", "gpt-nope"), "unknown model"),
    (MINIMAL.replace("steps: 2, ", ""), "steps"),
    (MINIMAL.replace("backend: cpu", "backend: cpu\nthresholds: {latency: 0.1}"), "unknown metric"),
    (MINIMAL.replace("point: {micro_batch: 2}", "point: {micro_batch: 2}, repeats: 1"), "repeats"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_a_bad_suite_is_a_user_error_naming_the_problem(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_suite(write(tmp_path, text))


def one_line_exit_2(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoscale: error:") and "\n" not in err
    return err


def test_a_missing_baseline_exits_2_before_any_trial(tmp_path, capsys):
    err = one_line_exit_2(capsys, ["bench", "--suite", str(write(tmp_path, MINIMAL)), "--baseline",
                                   str(tmp_path / "nope.json"), "--history", str(tmp_path / "h")])
    assert "does not exist" in err and not (tmp_path / "h").exists()


def test_a_suite_that_does_not_parse_exits_2(tmp_path, capsys):
    err = one_line_exit_2(capsys, ["bench", "--suite", str(write(tmp_path, "configs: [\n"))])
    assert "not valid YAML" in err


def test_a_suite_with_an_unknown_key_exits_2(tmp_path, capsys):
    err = one_line_exit_2(capsys, ["bench", "--suite", str(write(tmp_path, MINIMAL + "repeat: 3\n"))])
    assert "repeat" in err


def foreign_baseline(tmp_path) -> Path:
    hardware, driver = environment("cpu")
    record = BenchRecord(suite="tiny", created_at="2026-01-01T00:00:00+00:00", git_commit="0" * 40, versions={},
                         hardware={**hardware, "name": "h100-sxm", "device": "NVIDIA H100 80GB HBM3"},
                         driver=dict(driver), cases={"a": CaseSamples(kind="trial", definition={},
                                                                       samples={"step_s": [0.1, 0.1]})})
    return record.save(tmp_path / "foreign.json")


def test_a_baseline_from_other_hardware_exits_2(tmp_path, capsys):
    err = one_line_exit_2(capsys, ["bench", "--suite", str(write(tmp_path, MINIMAL)), "--baseline",
                                   str(foreign_baseline(tmp_path)), "--history", str(tmp_path / "h")])
    assert "other hardware" in err and "--allow-hardware-mismatch" in err


def test_allowing_a_hardware_mismatch_passes_the_check(tmp_path):
    from autoscale.bench.job import BenchOptions, prepare

    suite, baseline, _ = prepare(BenchOptions(suite=write(tmp_path, MINIMAL), baseline=foreign_baseline(tmp_path),
                                           allow_hardware_mismatch=True))
    assert baseline.hardware["name"] == "h100-sxm" and suite.name == "tiny"


def test_a_file_that_is_not_a_bench_record_exits_2(tmp_path, capsys):
    other = write(tmp_path, json.dumps({"benchmarks": []}), "other.json")
    err = one_line_exit_2(capsys, ["bench", "--suite", str(write(tmp_path, MINIMAL)), "--baseline", str(other)])
    assert "not an autoscale bench record" in err


def kernel_suite(tmp_path, scale: float) -> Path:
    """A suite of one kernel benchmark read from a pytest-benchmark file: a comparison without trials."""
    rounds = [scale * t for t in (0.0010, 0.00101, 0.00099, 0.00100, 0.00102, 0.00098)]
    (tmp_path / "kernels.json").write_text(json.dumps({"benchmarks": [
        {"name": "test_gelu", "fullname": "kernels/bench::test_gelu", "stats": {"data": rounds}}]}))
    return write(tmp_path, "name: kernels\nbackend: cpu\nkernels: {json: kernels.json}\n", "kernels.yaml")


def test_a_regression_exits_1_through_typer_after_writing_every_output(tmp_path):
    from typer.testing import CliRunner

    from autoscale.cli import app

    baseline, junit, html = tmp_path / "base.json", tmp_path / "j.xml", tmp_path / "t.html"
    common = ["bench", "--history", str(tmp_path / "h")]
    assert CliRunner().invoke(app, [*common, "--suite", str(kernel_suite(tmp_path, 1.0)),
                                    "--save-baseline", str(baseline)]).exit_code == 0
    result = CliRunner().invoke(app, [*common, "--suite", str(kernel_suite(tmp_path, 1.3)), "--baseline",
                                      str(baseline), "--junit", str(junit), "--html", str(html)])
    assert result.exit_code == 1 and "REGRESSION" in result.output
    assert junit.exists() and html.exists() and len(list((tmp_path / "h").glob("*.json"))) == 2


def test_the_autoscale_entry_point_exits_1_on_a_regression(tmp_path):
    baseline = tmp_path / "base.json"
    common = ["bench", "--history", str(tmp_path / "h")]
    assert main([*common, "--suite", str(kernel_suite(tmp_path, 1.0)), "--save-baseline", str(baseline)]) == 0
    assert main([*common, "--suite", str(kernel_suite(tmp_path, 1.3)), "--baseline", str(baseline)]) == 1
