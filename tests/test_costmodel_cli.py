"""`autoscale estimate` and `autoscale calibrate` through the CLI's importable entry point."""

from __future__ import annotations

import json

import pytest

from autoscale.cli import main

JSON_KEYS = ("memory", "time", "point", "tokens_per_s", "tflops_per_gpu", "mfu", "chosen_by_model", "fits",
             "borderline")


def test_estimate_json_has_the_documented_keys(capsys):
    code = main(["estimate", "--model", "gpt-1.3b", "--hardware", "h100-sxm", "--gpus", "64", "--zero", "2",
                 "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert all(key in result for key in JSON_KEYS)
    for key in ("model_states_bytes", "activations_bytes", "peak_bytes"):
        assert result["memory"][key] > 0
    for key in ("step_s", "compute_s", "comm_s", "bubble_s"):
        assert result["time"][key] >= 0
    assert result["point"]["zero_stage"] == 2 and "zero_stage" not in result["chosen_by_model"]
    assert "micro_batch" in result["chosen_by_model"]
    assert result["deepspeed_estimate"]["model_states_bytes"] > 0


def test_estimate_keeps_every_given_flag(capsys):
    code = main(["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "2", "--zero", "1",
                 "--micro-batch", "4", "--global-batch", "16", "--precision", "fp32", "--checkpointing", "none",
                 "--offload", "none", "--tp", "1", "--pp", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["chosen_by_model"] == []
    assert result["point"]["grad_accum"] == 2


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "gpt-tiny", "--hardware", "tpu-v9", "--gpus", "2"],
    ["estimate", "--model", "gpt-nope", "--hardware", "cpu"],
    ["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "2", "--zero", "7"],
    ["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "3", "--micro-batch", "2",
     "--global-batch", "5"],
    ["calibrate", "/nonexistent/run"],
])
def test_user_mistakes_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoscale: error:") and len(err.splitlines()) == 1
