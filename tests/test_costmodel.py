"""The cost model's memory and time formulas against their published closed forms (pure, no trials)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from autoscale.budget import MEMORY_MARGIN
from autoscale.costmodel import default_params, plan_cluster, predict, rank_points
from autoscale.costmodel.comm import Link, all_gather_s, all_reduce_s, reduce_scatter_s
from autoscale.costmodel.memory import (korthikanti_layer_bytes, layer_activation_bytes, logits_bytes,
                                        model_states, zero_paper_model_states)
from autoscale.costmodel.published import compare_published
from autoscale.costmodel.time import zero_hook_calls
from autoscale.hardware import get_hardware
from autoscale.models import PRESETS, ModelSpec
from autoscale.point import Point

SPEC = PRESETS["gpt-1.3b"]
GPU = get_hardware("a100-80gb")
PUBLISHED_CSV = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "published_runs.csv"


def point(**knobs) -> Point:
    return Point(**{"zero_stage": 0, "micro_batch": 1, "grad_accum": 1, "precision": "bf16", **knobs})


@pytest.mark.parametrize("stage, expected", [(0, 16 * 800), (1, 4 * 800 + 12 * 100), (2, 2 * 800 + 14 * 100),
                                             (3, 16 * 100)])
def test_zero_paper_formula_is_2_2_12_per_parameter_sharded_by_stage(stage, expected):
    assert zero_paper_model_states(800, 8, stage) == expected


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_mixed_precision_states_are_the_paper_plus_an_fp32_grad_partition(stage):
    states = model_states(800, precision="bf16", zero_stage=stage, offload="none", dp=8)
    assert states.params + states.grads + states.optimizer == zero_paper_model_states(800, 8, stage)
    assert states.step_transient == 4 * 100


def test_fp32_zero0_keeps_params_grads_and_two_adam_moments():
    states = model_states(1000, precision="fp32", zero_stage=0, offload="none", dp=4)
    assert (states.params, states.grads, states.optimizer) == (4000, 4000, 8000)


def test_offload_moves_optimizer_states_to_host():
    states = model_states(800, precision="bf16", zero_stage=2, offload="cpu", dp=8)
    assert states.optimizer == 0 and states.host == (12 + 4 + 2) * 100


def test_model_states_shrink_with_each_zero_stage():
    sizes = [predict(SPEC, point(zero_stage=s), GPU, world_size=8, seq_len=2048).memory.model_states_bytes
             for s in (0, 1, 2, 3)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4


@pytest.mark.parametrize("tp", [1, 2, 8])
@pytest.mark.parametrize("checkpointing", ["none", "selective", "full"])
def test_itemised_activations_reproduce_korthikanti_closed_forms(tp, checkpointing):
    spec = ModelSpec(name="k", n_layers=2, hidden=1024, n_heads=16, vocab_size=1000, max_seq_len=2048)
    s, b = 2048, 2
    ours = layer_activation_bytes(spec, tokens=s * b, seq_len=s, element=2, tp=tp, checkpointing=checkpointing,
                                  dropout=True, attention="eager")
    paper = korthikanti_layer_bytes(seq_len=s, micro_batch=b, hidden=1024, n_heads=16, tp=tp,
                                    checkpointing=checkpointing)
    assert ours == pytest.approx(paper, rel=1e-12)


def test_korthikanti_no_recompute_is_34_plus_5as_over_h():
    s, b, h, a = 2048, 1, 4096, 32
    assert korthikanti_layer_bytes(seq_len=s, micro_batch=b, hidden=h, n_heads=a) == s * b * h * (34 + 5 * a * s / h)


def test_our_model_keeps_no_attention_scores():
    spec = ModelSpec(name="k", n_layers=2, hidden=256, n_heads=4, vocab_size=1000, max_seq_len=4096)
    short, long = (layer_activation_bytes(spec, tokens=4096, seq_len=s, element=2) for s in (128, 4096))
    assert short == long  # SDPA: linear in tokens, no s^2 term


def test_torch_loss_holds_three_fp32_logit_buffers():
    assert logits_bytes(SPEC, tokens=10, precision="fp32", kernels="torch", tp=1) == 10 * SPEC.vocab_size * 12


def test_bubble_is_p_minus_1_over_m_of_the_pipelined_time():
    params = replace(default_params(GPU.name), pipeline_p2p_overlap=1.0)
    time = predict(SPEC, point(pp=4, grad_accum=8), GPU, world_size=4, seq_len=2048, params=params).time
    assert time.bubble_s == pytest.approx(3 / 8 * time.compute_s)


def test_interleaving_divides_the_bubble_by_the_chunks():
    params = replace(default_params(GPU.name), pipeline_p2p_overlap=1.0)
    plain, interleaved = (predict(SPEC, point(pp=4, grad_accum=8, vpp=v), GPU, world_size=4, seq_len=2048,
                                  params=params).time.bubble_s for v in (1, 2))
    assert interleaved == pytest.approx(plain / 2)


def test_ring_collectives_grow_with_size_and_follow_the_ring_cost():
    link = Link(bytes_per_s=1e9, latency_s=0.0)
    sizes = [1e3, 1e6, 1e9]
    assert [all_reduce_s(b, 8, link) for b in sizes] == sorted(all_reduce_s(b, 8, link) for b in sizes)
    assert all_reduce_s(1e9, 8, link) == pytest.approx(2 * 7 / 8)
    assert reduce_scatter_s(1e9, 8, link) + all_gather_s(1e9, 8, link) == pytest.approx(all_reduce_s(1e9, 8, link))
    assert all_reduce_s(1e9, 1, link) == 0.0


def test_data_parallel_comm_grows_with_the_model():
    small, large = (predict(PRESETS[name], point(zero_stage=1), GPU, world_size=16, seq_len=2048).time.comm_s
                    for name in ("gpt-350m", "gpt-2.7b"))
    assert large > small > 0


def test_full_recompute_costs_a_third_more_block_compute():
    none, full = (predict(SPEC, point(checkpointing=c), GPU, world_size=1, seq_len=2048).time.compute_s
                  for c in ("none", "full"))
    assert 1.25 < full / none < 4 / 3


def test_a_model_too_large_for_the_device_does_not_fit():
    prediction = predict(PRESETS["gpt-13b"], point(), get_hardware("l40s"), world_size=1, seq_len=2048)
    assert not prediction.fits and prediction.memory.peak_bytes > MEMORY_MARGIN * prediction.budget.device_bytes


@pytest.mark.parametrize("peak_over_memory, fits, borderline", [
    (0.85, True, False),   # inside the 90% margin
    (0.95, False, True),   # past it by less than the model's GPU memory error: only a trial can tell
    (1.15, False, False),  # past it by more (GPU_MEMORY_ERROR: 20%)
])
def test_a_point_just_past_the_margin_is_borderline(peak_over_memory, fits, borderline):
    """The same prediction on devices sized so that its peak is a chosen share of their memory."""
    peak = predict(SPEC, point(), GPU, world_size=1, seq_len=2048).peak_bytes
    device = replace(GPU, memory_bytes=int(peak / peak_over_memory))
    prediction = predict(SPEC, point(), device, world_size=1, seq_len=2048)
    assert (prediction.fits, prediction.borderline) == (fits, borderline)


def test_cpu_ranks_share_the_machine_memory():
    cpu = get_hardware("cpu")
    prediction = predict(PRESETS["gpt-tiny"], point(), cpu, world_size=2, seq_len=128)
    assert prediction.budget.device_bytes == cpu.memory_bytes // 2


def test_rank_points_keeps_fitting_points_fastest_first():
    points = [point(zero_stage=s, micro_batch=m) for s in (0, 3) for m in (1, 64)]
    ranked = rank_points(PRESETS["gpt-2.7b"], points, get_hardware("a100-40gb"), world_size=8, seq_len=2048)
    speeds = [prediction.time.tokens_per_s for _, prediction in ranked]
    assert ranked and all(p.fits for _, p in ranked) and speeds == sorted(speeds, reverse=True)
    assert len(ranked) < len(points)


def test_plan_cluster_holds_fixed_knobs_and_matches_the_global_batch():
    plan = plan_cluster(SPEC, get_hardware("h100-sxm"), 16, global_batch=256, seq_len=2048,
                        fixed={"zero_stage": 1, "precision": "bf16"})
    assert plan.fitting and plan.skipped  # some tp x pp layouts cannot make the batch, counted by rule
    for candidate, _ in plan.fitting[:20]:
        assert candidate.zero_stage == 1 and candidate.precision == "bf16"
        assert candidate.global_batch(16) == 256


def test_published_runs_are_predicted_within_the_goal_with_one_parameter_set():
    rows = compare_published(PUBLISHED_CSV)
    errors = sorted(abs(row.error) for row in rows)
    assert errors[len(errors) // 2] <= 0.15 and errors[-1] <= 0.30


def test_zero_hooks_count_tensors_at_stage_2_and_module_gathers_at_stage_3():
    spec = PRESETS["gpt-tiny"]
    calls = {stage: zero_hook_calls(spec, point(zero_stage=stage)) for stage in range(4)}
    assert calls == {0: 0, 1: 0, 2: spec.parameter_tensors(),
                     3: spec.parameter_tensors() + 4 * spec.parameter_modules()}


def test_zero_hook_time_is_paid_per_micro_batch():
    """Same global batch, twice the micro-batches: the ZeRO-2 hook overhead doubles, ZeRO-0 has none."""
    cpu, spec = get_hardware("cpu"), PRESETS["gpt-tiny"]
    params = default_params("cpu")

    def overhead(stage: int, micro_batch: int, grad_accum: int) -> float:
        prediction = predict(spec, point(zero_stage=stage, micro_batch=micro_batch, grad_accum=grad_accum), cpu,
                             world_size=2, seq_len=128, params=params)
        return prediction.time.overhead_s - params.step_overhead_s

    assert overhead(0, 4, 2) == 0 and overhead(0, 2, 4) == 0
    assert overhead(2, 2, 4) == pytest.approx(2 * overhead(2, 4, 2))
    assert overhead(2, 4, 2) == pytest.approx(2 * spec.parameter_tensors() * params.zero_hook_s)


def test_warm_rank_defaults_predict_the_held_out_warm_sweep_where_fresh_ones_over_predict():
    """The warm CPU defaults were read off gpt-tiny's warm sweep; llama-tiny's warm sweep is held out."""
    import statistics

    from autoscale.costmodel import default_params
    from autoscale.strategies.replay import load_table

    table = load_table(Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "cpu-sweep-llama-tiny-r3.csv")
    assert table.warm_ranks  # its sidecar says runner: pool

    def median_error(warm_ranks: bool) -> float:
        params = default_params("cpu", warm_ranks=warm_ranks)
        errors = [abs(predict(table.spec, p, table.hardware, world_size=table.world_size, seq_len=table.seq_len,
                              params=params).peak_bytes / result.peak_bytes - 1)
                  for p in table.points() if (result := table.results[p.key()]).ok]
        return statistics.median(errors)

    assert median_error(warm_ranks=True) < 0.05 < 0.15 < median_error(warm_ranks=False)
    assert default_params("h100-sxm", warm_ranks=True) == default_params("h100-sxm")  # GPU memory: no host RSS


@pytest.mark.parametrize("launcher, warm_ranks", [("warm", True), ("fresh", False)])
def test_a_cpu_tune_session_predicts_with_its_launchers_defaults(launcher, warm_ranks, tmp_path, monkeypatch):
    from autoscale.costmodel import default_params
    from autoscale.point import baseline_point
    from autoscale.session import TuneSession

    monkeypatch.setenv("AUTOSCALE_CALIBRATION_DIR", str(tmp_path / "no-calibration"))
    session = TuneSession.from_flags(model="gpt-tiny", trials=1, space="default", global_batch=16, seq_len=64,
                                     backend="cpu", nproc=2, out=tmp_path / "run", study_name=None,
                                     timeout_per_trial=60.0, storage=None, resume=False, seed=0, command=[],
                                     launcher=launcher)
    point = baseline_point(16, 2)
    expected = predict(PRESETS["gpt-tiny"], point, session.hardware, world_size=2, seq_len=64,
                       params=default_params("cpu", warm_ranks=warm_ranks))
    assert session.predictor()(point).peak_bytes == expected.peak_bytes


# ---- the knobs of published GPU runs ---------------------------------------------------------

LLAMA_70B = PRESETS["llama-3.1-70b"]
H100 = get_hardware("h100-sxm")


def test_vpp_needs_a_pipeline_and_megatron_sp_needs_tensor_parallelism():
    from autoscale.errors import UserError

    with pytest.raises(UserError, match=r"vpp \(--vpp\) 2 needs a pipeline"):
        point(vpp=2)
    with pytest.raises(UserError, match=r"megatron_sp \(--megatron-sp\) splits .* it needs tp \(--tp\) > 1"):
        point(megatron_sp=True)
    assert point(tp=2, megatron_sp=True).megatron_sp and point(pp=2, vpp=2).vpp == 2


def test_sequence_and_context_ranks_share_a_sample_but_zero_shards_over_them():
    from autoscale.costmodel.memory import zero_shards

    knobs = point(tp=2, sp=2, cp=2)
    assert knobs.data_parallel(64) == 8 and zero_shards(knobs, 64) == 32


def test_megatron_sequence_parallelism_reproduces_korthikanti_equation_4():
    spec = ModelSpec(name="k", n_layers=2, hidden=1024, n_heads=16, vocab_size=1000, max_seq_len=2048)
    ours = layer_activation_bytes(spec, tokens=4096, seq_len=2048, element=2, tp=8, dropout=True, attention="eager",
                                  sequence_parallel=True)
    paper = korthikanti_layer_bytes(seq_len=2048, micro_batch=2, hidden=1024, n_heads=16, tp=8,
                                    sequence_parallel=True)
    assert ours == pytest.approx(paper, rel=1e-12)


def test_flash_attention_keeps_no_copy_of_its_output_and_eager_keeps_the_scores():
    base = dict(name="k", n_layers=2, hidden=1024, n_heads=16, vocab_size=1000, max_seq_len=4096)
    sizes = {kind: layer_activation_bytes(ModelSpec(**base, attention=kind), tokens=4096, seq_len=4096, element=2,
                                          attention=kind) for kind in ("flash", "sdpa", "eager")}
    assert sizes["flash"] == pytest.approx(sizes["sdpa"] - 4096 * 1024 * 2)
    assert sizes["eager"] > 2 * sizes["sdpa"]  # s^2 scores at s = 4096


def test_interleaving_adds_korthikanti_first_stage_activations():
    plain, interleaved = (predict(SPEC, point(pp=4, grad_accum=8, vpp=v), GPU, world_size=4,
                                  seq_len=2048).memory.activations_bytes for v in (1, 2))
    edges = 3 * 2048 * SPEC.hidden * 2
    assert interleaved - edges == pytest.approx((plain - edges) * (1 + 3 / 8))


def test_context_parallelism_splits_activations_and_pays_for_kv_exchange():
    one, four = (predict(LLAMA_70B, point(tp=8, cp=cp, zero_stage=3, checkpointing="full", megatron_sp=True), H100,
                         world_size=64, seq_len=32768) for cp in (1, 4))
    assert four.memory.activations_bytes == pytest.approx(one.memory.activations_bytes / 4, rel=0.01)
    assert four.time.comm_s > 0


def test_zero3_start_up_never_holds_the_whole_model_on_a_gpu():
    prediction = predict(LLAMA_70B, point(zero_stage=3, checkpointing="full"), H100, world_size=64, seq_len=4096)
    assert LLAMA_70B.param_count() * 2 > H100.memory_bytes  # the whole model in bf16 would not fit one card
    assert prediction.fits


def test_fp8_runs_only_the_matmuls_faster():
    bf16, fp8 = (predict(LLAMA_70B, point(tp=8, zero_stage=3, precision=p), H100, world_size=64, seq_len=4096)
                 for p in ("bf16", "fp8"))
    assert fp8.time.compute_s < bf16.time.compute_s
    assert fp8.peak_bytes == bf16.peak_bytes  # weights and activations stay bf16


def test_all_reduce_latency_grows_with_the_log_of_ranks_and_all_gather_with_the_ranks():
    from autoscale.costmodel.comm import latency_steps

    latency_only = Link(bytes_per_s=1e30, latency_s=1.0)
    assert latency_steps(4) == 2 and latency_steps(1024) == 10
    assert all_reduce_s(1.0, 1024, latency_only) == pytest.approx(20.0)
    assert all_gather_s(1.0, 1024, latency_only) == pytest.approx(1023.0)


def test_each_gpu_family_has_its_own_fitted_efficiencies():
    assert default_params("h100-96gb-hbm2e-500w") == default_params("h200") == default_params("h100-sxm")
    assert default_params("a100-40gb") == default_params("a100-80gb") != default_params("h100-sxm")


def test_a_hugging_face_config_asking_for_flash_attention_keeps_less_per_layer():
    from autoscale.models.hf_config import spec_from_hf_dict

    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 1024, "num_attention_heads": 16,
              "vocab_size": 1000, "max_position_embeddings": 2048, "intermediate_size": 2816}
    default, flash = (spec_from_hf_dict(config | extra, name="m")
                      for extra in ({}, {"attn_implementation": "flash_attention_2"}))
    assert (default.attention, flash.attention) == ("sdpa", "flash")
    sizes = [predict(spec, point(), GPU, world_size=1, seq_len=2048).memory.activations_bytes
             for spec in (default, flash)]
    assert sizes[1] < sizes[0]


def test_the_attention_knob_overrides_the_model_s_and_model_keeps_it():
    spec = PRESETS["llama-tiny"]
    predictions = {attention: predict(spec, point(attention=attention), GPU, world_size=1, seq_len=128)
                   for attention in ("model", "sdpa", "eager")}
    assert predictions["model"] == predictions["sdpa"]  # the preset's attention is SDPA
    assert predictions["eager"].memory.activations_bytes > predictions["sdpa"].memory.activations_bytes
    assert predictions["eager"].tokens_per_s < predictions["sdpa"].tokens_per_s


def test_per_op_checkpointing_keeps_less_than_selective_and_recomputes_half_the_matmuls():
    spec, tokens = PRESETS["llama-3.1-8b"], 8192
    per_layer = {ckpt: layer_activation_bytes(spec, tokens=tokens, seq_len=tokens, element=2, checkpointing=ckpt)
                 for ckpt in ("none", "selective", "op", "full")}
    assert per_layer["full"] < per_layer["op"] < per_layer["selective"] < per_layer["none"]
    h100 = get_hardware("h100-sxm")
    steps = {ckpt: predict(spec, point(zero_stage=3, precision="bf16", checkpointing=ckpt), h100, world_size=8,
                           seq_len=8192).time.compute_s for ckpt in ("none", "op", "full")}
    assert steps["none"] < steps["op"] < steps["full"]


def test_fsdp_under_a_pipeline_costs_what_zero_1_costs():
    # torchtitan keeps a stage's parameters gathered and its gradients whole across micro-batches
    zero3, zero1 = (predict(LLAMA_70B, point(zero_stage=stage, precision="bf16", tp=8, pp=4, grad_accum=16), H100,
                            world_size=64, seq_len=8192) for stage in (3, 1))
    assert zero3.peak_bytes == zero1.peak_bytes and zero3.time.step_s == zero1.time.step_s
    without_pipeline = predict(LLAMA_70B, point(zero_stage=3, precision="bf16", tp=8, grad_accum=16), H100,
                               world_size=64, seq_len=8192)
    assert without_pipeline.memory.params < zero3.memory.params


def test_the_nvlink_domain_is_the_systems_gb200_nvl72_keeps_72_gpus_off_the_network():
    rack = get_hardware("gb200-nvl72")
    assert rack.gpus_per_node == 72
    eight_gpu_domains = replace(rack, gpus_per_node=8)
    knobs = point(zero_stage=1, precision="bf16", grad_accum=2)
    in_rack, across_nodes = (predict(LLAMA_70B, knobs, hardware, world_size=72, seq_len=8192)
                             for hardware in (rack, eight_gpu_domains))
    assert in_rack.time.comm_s < across_nodes.time.comm_s
