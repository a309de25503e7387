"""`autoscale estimate` and `autoscale calibrate` through the CLI's importable entry point."""

from __future__ import annotations

import json

import pytest

from autoscale.cli import main

JSON_KEYS = ("memory", "time", "point", "tokens_per_s", "tflops_per_gpu", "mfu", "chosen_by_model", "fits",
             "borderline", "run_by")


def test_estimate_json_has_the_documented_keys(capsys):
    code = main(["estimate", "--model", "gpt-1.3b", "--hardware", "h100-sxm", "--gpus", "64", "--zero-stage", "2",
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
    code = main(["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "2", "--zero-stage", "1",
                 "--micro-batch", "4", "--global-batch", "16", "--precision", "fp32", "--checkpointing", "none",
                 "--offload", "none", "--kernels", "torch", "--attention", "model", "--tp", "1", "--pp", "1",
                 "--sp", "1", "--cp", "1", "--vpp", "1", "--no-megatron-sp", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["chosen_by_model"] == []
    assert result["point"]["grad_accum"] == 2


def test_estimate_predicts_a_given_layout_the_trial_engine_refuses_and_names_who_runs_it(capsys):
    knobs = ["--zero-stage", "1", "--micro-batch", "1", "--precision", "bf16", "--checkpointing", "selective",
             "--offload", "none", "--kernels", "torch", "--attention", "model", "--tp", "8", "--pp", "4",
             "--sp", "1", "--cp", "1", "--vpp", "2", "--megatron-sp"]
    argv = ["estimate", "--model", "llama-3.1-70b", "--hardware", "h100-sxm", "--gpus", "64", "--global-batch", "128",
            "--seq-len", "8192", *knobs]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run_by"]["deepspeed"] == "tp with pp" and result["run_by"]["megatron"] is None
    assert result["point"]["tp"] == 8 and result["point"]["grad_accum"] == 64 and result["tokens_per_s"] > 0
    assert main(argv) == 0
    assert "DeepSpeed's pipeline engine (autoscale's trials): no (tp with pp)" in capsys.readouterr().out


def test_estimate_plans_open_knobs_among_the_layouts_of_its_target(capsys):
    argv = ["estimate", "--model", "llama-3.1-70b", "--hardware", "h100-sxm", "--gpus", "64", "--global-batch", "128",
            "--seq-len", "8192", "--zero-stage", "1", "--precision", "bf16", "--json"]
    assert main([*argv, "--target", "megatron"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["planned_for"] == "megatron" and result["run_by"]["megatron"] is None and result["fits"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["run_by"]["deepspeed"] is None


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "gpt-tiny", "--hardware", "tpu-v9", "--gpus", "2"],
    ["estimate", "--model", "gpt-nope", "--hardware", "cpu"],
    ["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "2", "--zero-stage", "7"],
    ["estimate", "--model", "gpt-tiny", "--hardware", "cpu", "--gpus", "3", "--micro-batch", "2",
     "--global-batch", "5"],
    ["calibrate", "/nonexistent/run"],
])
def test_user_mistakes_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoscale: error:") and len(err.splitlines()) == 1


def test_estimate_of_a_point_given_in_full_never_refuses_and_says_what_it_compared(capsys):
    knobs = ["--zero-stage", "0", "--micro-batch", "8", "--precision", "fp32", "--checkpointing", "none",
             "--offload", "none", "--kernels", "torch", "--attention", "model", "--tp", "1", "--pp", "1",
             "--sp", "1", "--cp", "1", "--vpp", "1", "--no-megatron-sp"]
    code = main(["estimate", "--model", "gpt-1.3b", "--hardware", "a100-40gb", "--gpus", "1", *knobs])
    out = capsys.readouterr().out
    assert code == 0
    assert "predicted not to fit: peak" in out and "GiB usable (90% of 40.0 GiB)" in out  # what CUDA reports


def test_a_plan_skips_layouts_that_cannot_make_the_batch_and_counts_them(tmp_path, capsys):
    space = tmp_path / "tp.yaml"
    space.write_text("zero_stage: [1]\nmicro_batch: [1]\nprecision: [bf16]\ntp: [1, 2, 4]\n")
    code = main(["tune", "--model", "gpt-1.3b", "--backend", "model", "--hardware", "h100-sxm", "--gpus", "512",
                 "--global-batch", "256", "--space", str(space), "--out", str(tmp_path / "plan")])
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "plan" / "summary.json").read_text())
    assert code == 0 and summary["best"]["point"]["tp"] >= 2  # dp 512 cannot make a batch of 256
    assert summary["evaluated"]["skipped_by_rule"]["global batch not a multiple of micro-batch x data-parallel"] >= 1
    assert "layouts skipped by rule" in out


def test_a_128k_token_llama_on_8_gpus_is_planned_with_its_sequences_split(capsys):
    assert main(["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--gpus", "8", "--seq-len", "131072",
                 "--global-batch", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fits"] and result["point"]["sp"] * result["point"]["cp"] > 1


def test_gpu_estimates_default_to_the_pre_training_length_and_cpu_ones_stay_short(capsys):
    knobs = ["--zero-stage", "3", "--micro-batch", "1", "--precision", "bf16", "--checkpointing", "full",
             "--offload", "none", "--kernels", "torch", "--attention", "model", "--tp", "1", "--pp", "1", "--sp", "1",
             "--cp", "1", "--vpp", "1", "--no-megatron-sp", "--json"]
    assert main(["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--gpus", "8", *knobs]) == 0
    assert json.loads(capsys.readouterr().out)["seq_len"] == 8192  # Llama-3.1's 131072 maximum capped
    assert main(["estimate", "--model", "llama-3.1-8b", "--hardware", "cpu", "--gpus", "2", *knobs]) == 0
    assert json.loads(capsys.readouterr().out)["seq_len"] == 1024
