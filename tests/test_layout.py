"""One set of layout rules: each with one message naming what to change, and counted when enumerating."""

import math

import pytest

from autoscale.errors import RuleError, UserError
from autoscale.layout import build_point, check_layout, enumerate_points
from autoscale.layout_targets import LAYOUT_TARGETS, describe_who_runs, get_layout_target, who_runs
from autoscale.models.presets import resolve_model
from autoscale.point import KNOB_NAMES, KNOBS, Point
from autoscale.space import _SpaceFile


def test_pipeline_with_zero_3_names_the_rule_and_the_knobs_to_change():
    with pytest.raises(RuleError, match=r"DeepSpeed's pipeline engine .*: its pipeline runs ZeRO stage 0 or 1 only.*zero_stage \(--zero-stage\)"):
        build_point({"zero_stage": 3, "pp": 2}, global_batch=8, world_size=2)


def test_pipeline_with_zero_0_is_refused_for_its_per_stage_clipping_naming_the_knobs():
    with pytest.raises(RuleError, match=r"own norm \(gradient_clipping\).*zero_stage \(--zero-stage\) to 1 or pp \(--pp\)"):
        build_point({"zero_stage": 0, "pp": 2}, global_batch=8, world_size=2)


def test_pipeline_with_tensor_parallelism_is_refused_naming_both_knobs():
    with pytest.raises(RuleError, match=r"AutoTP training replaces .*tp \(--tp\) or pp \(--pp\)"):
        build_point({"zero_stage": 1, "tp": 2, "pp": 2}, global_batch=8, world_size=4)


def test_pipeline_with_sequence_parallelism_is_refused_naming_both_knobs():
    with pytest.raises(RuleError, match=r"run whole sequences.*sp \(--sp\) or pp \(--pp\)"):
        build_point({"zero_stage": 1, "sp": 2, "pp": 2}, global_batch=8, world_size=4)


def test_a_pipeline_needs_a_micro_batch_per_stage_and_names_micro_batch_and_pp():
    assert build_point({"zero_stage": 1, "pp": 2, "micro_batch": 4}, global_batch=8, world_size=2).grad_accum == 2
    with pytest.raises(RuleError, match=r"1 micro-batches per step .* pp 2 .*micro_batch \(--micro-batch\) or pp \(--pp\)"):
        build_point({"zero_stage": 1, "pp": 2, "micro_batch": 4}, global_batch=4, world_size=2)


def test_an_impossible_global_batch_names_the_flag():
    with pytest.raises(RuleError, match="--global-batch"):
        build_point({"micro_batch": 3}, global_batch=8, world_size=2)


def test_model_rules_need_the_model():
    spec = resolve_model("gpt-tiny")
    point = Point(tp=spec.n_heads + 1)
    check_layout(point, world_size=point.tp)  # without the model nothing refuses it
    with pytest.raises(RuleError, match=r"does not divide the .* attention heads.*tp \(--tp\)"):
        check_layout(point, world_size=point.tp, spec=spec)


def test_enumeration_skips_what_the_rules_refuse_and_counts_it_by_rule():
    choices = {"zero_stage": (0, 2), "micro_batch": (1, 3), "offload": ("none", "cpu"), "pp": (1, 2)}
    points, skipped = enumerate_points(choices, global_batch=8, world_size=2)
    # the arithmetic first (the global batch), then the engine's rules
    assert skipped == {"offload needs ZeRO >= 1": 4, "pipeline with ZeRO-2/3": 2, "pipeline with ZeRO-0": 1,
                       "global batch not a multiple of micro-batch x data-parallel": 6}
    assert len(points) + sum(skipped.values()) == math.prod(len(v) for v in choices.values())
    assert all(p.global_batch(2) == 8 for p in points)


def test_a_bad_value_names_its_space_key_and_flag():
    with pytest.raises(UserError, match=r"precision \(--precision\) must be one of fp32, bf16, fp16"):
        Point(precision="fp64")


def test_the_space_file_has_one_key_per_knob():
    assert set(_SpaceFile.model_fields) == {"description", *KNOB_NAMES}


def test_a_csv_row_reads_back_with_each_fields_type_and_defaults_for_missing_columns():
    point = Point(zero_stage=2, micro_batch=4, grad_accum=2, precision="bf16")
    row = {k: (float(v) if isinstance(v, int) else v) for k, v in point.as_dict().items()}  # as pandas reads it
    row.pop("kernels")  # a table written before the column existed
    row["tp"] = float("nan")
    assert Point.from_row(row) == point
    assert all(k.default == getattr(Point(), k.name) for k in KNOBS)


def test_tp_with_pp_is_the_trial_engines_rule_not_the_arithmetics():
    knobs = {"zero_stage": 1, "tp": 2, "pp": 2, "micro_batch": 1}
    with pytest.raises(RuleError, match=r"^DeepSpeed's pipeline engine \(autoscale's trials\): tp 2 with pp 2"):
        build_point(knobs, global_batch=8, world_size=4)
    for name in ("megatron", "megatron-deepspeed"):
        assert build_point(knobs, global_batch=8, world_size=4, target=LAYOUT_TARGETS[name]).tp == 2
    assert build_point(knobs, global_batch=8, world_size=4, target=None).pp == 2


def test_fsdp_under_a_pipeline_is_torchtitans_and_refused_by_megatron_naming_it():
    knobs = {"zero_stage": 3, "tp": 2, "pp": 2, "precision": "bf16"}
    assert build_point(knobs, global_batch=8, world_size=8, target=LAYOUT_TARGETS["torchtitan"]).zero_stage == 3
    with pytest.raises(RuleError, match=r"^Megatron-LM: .*ZeRO-1.*zero_stage \(--zero-stage\)"):
        build_point(knobs, global_batch=8, world_size=8, target=LAYOUT_TARGETS["megatron"])


def test_a_target_with_an_export_refuses_what_its_export_cannot_write():
    with pytest.raises(RuleError, match=r"^torchtitan: zero_stage \(--zero-stage\) 1: FSDP2 cannot shard"):
        build_point({"zero_stage": 1, "precision": "bf16"}, global_batch=8, world_size=2,
                    target=LAYOUT_TARGETS["torchtitan"])
    with pytest.raises(RuleError, match=r"^HF Trainer: tp"):
        build_point({"zero_stage": 1, "tp": 2}, global_batch=8, world_size=2, target=LAYOUT_TARGETS["hf-trainer"])


def test_who_runs_names_each_engine_and_the_rule_it_refuses_by():
    point = Point(zero_stage=1, tp=8, pp=4, vpp=2, micro_batch=1, grad_accum=8, precision="bf16", megatron_sp=True)
    runs = who_runs(point)
    assert runs["deepspeed"] == "tp with pp" and runs["megatron"] is None
    assert runs["megatron-deepspeed"] == "no interleaved pipeline schedule" and runs["hf-trainer"] is not None
    line = describe_who_runs(runs)
    assert "DeepSpeed's pipeline engine (autoscale's trials): no (tp with pp)" in line and "Megatron-LM: yes" in line


def test_an_unknown_target_names_the_flag_and_the_choices():
    with pytest.raises(UserError, match=r"unknown target 'nemo' \(--target\): choose one of deepspeed, "):
        get_layout_target("nemo")
