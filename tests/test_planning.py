"""`autoscale tune --backend model`: a whole search on the cost model for a cluster we cannot run on."""

from __future__ import annotations

import json

import pandas as pd

from autoscale.cli import main
from autoscale.budget import MEMORY_MARGIN
from autoscale.costmodel import predict
from autoscale.hardware import get_hardware
from autoscale.models import PRESETS
from autoscale.point import Point


def test_a_plan_says_what_it_pruned_and_which_faster_points_only_a_trial_can_settle(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUTOSCALE_CALIBRATION_DIR", str(tmp_path / "no-calibration"))
    out = tmp_path / "plan"
    code = main(["tune", "--backend", "model", "--hardware", "a100-40gb", "--gpus", "8", "--model", "llama-7b",
                 "--global-batch", "256", "--seq-len", "2048", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    trials = pd.read_csv(out / "trials.csv")
    ok, pruned = trials[trials["status"] == "predicted"], trials[trials["status"] == "pruned"]
    assert summary["predicted"] and len(ok) and len(pruned)
    assert "PREDICTED" in summary["provenance"] and summary["git_commit"] in summary["provenance"]
    # nothing ran: the figures are only in the pred_* columns, never in the measured ones
    assert ok["tokens_per_s"].isna().all() and ok["peak_bytes"].isna().all() and ok["mfu"].isna().all()
    assert ok["pred_tokens_per_s"].notna().all() and ok["pred_peak_bytes"].notna().all()
    assert pruned["reason"].str.contains(f"GiB usable ({MEMORY_MARGIN:.0%} of", regex=False).all()

    # every pruned row is predicted past the margin, and the borderline ones say only a trial can tell
    hardware, spec = get_hardware("a100-40gb"), PRESETS["llama-7b"]
    for row in pruned.to_dict("records"):
        point = Point.from_row(row)
        prediction = predict(spec, point, hardware, world_size=8, seq_len=2048)
        assert not prediction.fits
        assert ("only a trial can tell" in row["reason"]) == prediction.borderline

    faster = summary["evaluated"]["borderline_faster"]
    assert faster > 0  # llama-7b on 8 x 40 GB: its fastest layouts crowd the memory margin
    out = " ".join(capsys.readouterr().out.split())
    assert f"{faster} more predicted faster than the best" in out
    assert "calibration: none for a100-40gb (default parameters)" in out  # a plan says which parameters it used


def test_a_plan_for_megatron_ranks_tp_with_pp_and_the_console_names_the_engine(tmp_path, capsys):
    out = tmp_path / "plan"
    code = main(["tune", "--backend", "model", "--hardware", "h100-sxm", "--gpus", "64", "--model", "llama-3.1-70b",
                 "--global-batch", "128", "--target", "megatron", "--out", str(out)])
    assert code == 0
    console = " ".join(capsys.readouterr().out.split())
    assert "the layouts Megatron-LM runs (--target)" in console
    assert "seq 8192: the default on GPUs" in console  # Llama-3.1's pre-training length, not its 128K maximum
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"]["layout_target"] == "megatron" and "tp with pp" not in summary["evaluated"]["skipped_by_rule"]
    ok = pd.read_csv(out / "trials.csv").query("status == 'predicted'")
    assert ((ok["tp"] > 1) & (ok["pp"] > 1)).any() and (ok["vpp"] > 1).any() and ok["zero_stage"].max() <= 1


def test_a_plan_defaults_to_the_trial_engine_which_never_combines_tp_with_pp(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["tune", "--backend", "model", "--hardware", "h100-sxm", "--gpus", "16", "--model", "llama-7b",
                 "--global-batch", "64", "--out", str(out)]) == 0
    assert "DeepSpeed's pipeline engine (autoscale's trials) runs (--target)" in " ".join(capsys.readouterr().out.split())
    ok = pd.read_csv(out / "trials.csv").query("status == 'predicted'")
    assert not ((ok["tp"] > 1) & (ok["pp"] > 1)).any()


def test_target_is_for_plans_only(capsys):
    assert main(["tune", "--backend", "cpu", "--target", "megatron"]) == 2
    assert "--target names the engine a plan is for" in capsys.readouterr().err


def test_a_torchtitan_plans_winner_is_exported_to_torchtitan(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["tune", "--backend", "model", "--hardware", "h100-sxm", "--gpus", "64", "--model", "llama-3.1-70b",
                 "--global-batch", "128", "--target", "torchtitan", "--out", str(out)]) == 0
    best = Point.from_dict(json.loads((out / "summary.json").read_text())["best"]["point"])
    assert best.zero_stage in (0, 2, 3) and best.precision != "fp16" and best.sp == 1
    capsys.readouterr()
    assert main(["export", str(out), "--to", "torchtitan", "--out", str(tmp_path / "titan")]) == 0
    toml = next((tmp_path / "titan").glob("*.toml")).read_text()
    assert f"tensor_parallel_degree = {best.tp}" in toml and f"pipeline_parallel_degree = {best.pp}" in toml



def test_a_plans_default_folder_names_model_hardware_gpus_and_sequence_and_is_not_overwritten(tmp_path, monkeypatch,
                                                                                               capsys):
    monkeypatch.chdir(tmp_path)
    plan = ["tune", "--backend", "model", "--model", "gpt-125m", "--seq-len", "512"]
    assert main([*plan, "--hardware", "H100-SXM", "--gpus", "16"]) == 0
    assert main([*plan, "--hardware", "a100-80gb", "--gpus", "16"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["gpt-125m-a100-80gb-16gpu-seq512",
                                                                     "gpt-125m-h100-sxm-16gpu-seq512"]
    first = (tmp_path / "runs" / "gpt-125m-h100-sxm-16gpu-seq512" / "summary.json").read_bytes()
    capsys.readouterr()
    assert main([*plan, "--hardware", "h100-sxm", "--gpus", "16"]) == 2
    assert "already holds a study: pass --resume" in capsys.readouterr().err
    assert (tmp_path / "runs" / "gpt-125m-h100-sxm-16gpu-seq512" / "summary.json").read_bytes() == first
    assert main([*plan, "--hardware", "h100-sxm", "--gpus", "16", "--resume"]) == 0


def test_an_h100_plan_leaves_out_fp16_points_predicted_as_their_bf16_twins(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["tune", "--backend", "model", "--model", "gpt-1.3b", "--hardware", "h100-sxm", "--gpus", "64",
                 "--out", str(out)]) == 0
    trials = pd.read_csv(out / "trials.csv")
    predicted = trials[trials["status"] == "predicted"]
    knobs = [c for c in ("zero_stage", "micro_batch", "grad_accum", "checkpointing", "offload", "kernels", "attention",
                         "tp", "pp", "sp", "cp", "vpp", "megatron_sp")]
    twins = predicted.groupby(knobs + ["pred_tokens_per_s", "pred_peak_bytes"])["precision"].nunique()
    assert (twins == 1).all()  # no point listed twice as fp16 and bf16 with one prediction
    summary = json.loads((out / "summary.json").read_text())
    dropped = summary["evaluated"]["fp16_same_as_bf16"]
    assert dropped > 0 and f"{dropped} fp16 points predicted as their bf16 twins left out" in capsys.readouterr().out
