"""The numerics gate: the layout-independent data order, the bands, and real trials held to a reference."""

import json

import pytest
import torch

from autoscale.engine import MeasurePolicy, TrialRequest, run_trial
from autoscale.engine.data import micro_batch_tokens
from autoscale.engine.numerics import (FP32_UNIT_ROUNDOFF, GATE_STEPS, MAX_GRAD_NORM_TOLERANCE,
                                       RELATIVE_GRAD_NORM_TOLERANCE, SUMMATION_LAMBDA, NumericsRecord, divergence,
                                       grad_norm_tolerance, loss_gap, read_record, run_reference)
from autoscale.engine.request import TrialResult, reference_request
from autoscale.models import PRESETS
from autoscale.point import Point
from autoscale.results import METRIC_COLUMNS

REFERENCE = NumericsRecord(losses=(7.6, 7.5, 7.4, 7.3), grad_norm0=1.5)


def global_batch(step: int, *, data_parallel: int, micro_batch: int, grad_accum: int) -> list[tuple]:
    samples = []
    for rank in range(data_parallel):
        for micro_step in range(grad_accum):
            inputs, targets = micro_batch_tokens(step=step, micro_step=micro_step, data_parallel_rank=rank,
                                                 data_parallel=data_parallel, micro_batch=micro_batch,
                                                 grad_accum=grad_accum, seed=7, seq_len=16, vocab_size=100)
            assert torch.equal(inputs[:, 1:], targets[:, :-1])
            samples += [tuple(row.tolist()) for row in inputs]
    return sorted(samples)


def test_every_layout_of_a_global_batch_trains_the_same_samples():
    layouts = [dict(data_parallel=1, micro_batch=1, grad_accum=8), dict(data_parallel=2, micro_batch=2, grad_accum=2),
               dict(data_parallel=4, micro_batch=2, grad_accum=1), dict(data_parallel=8, micro_batch=1, grad_accum=1)]
    for step in (0, 3):
        batches = [global_batch(step, **layout) for layout in layouts]
        assert all(batch == batches[0] for batch in batches) and len(set(batches[0])) == 8


def test_successive_steps_train_different_samples():
    layout = dict(data_parallel=2, micro_batch=2, grad_accum=2)
    assert not set(global_batch(0, **layout)) & set(global_batch(1, **layout))


def test_the_loss_gap_is_the_largest_relative_gap_of_any_step():
    assert loss_gap((7.6, 7.5, 7.4 * 1.001, 7.3), REFERENCE.losses) == pytest.approx(1e-3)


def test_an_fp32_trial_within_1e_4_of_the_reference_passes():
    record = NumericsRecord(losses=tuple(x * (1 + 5e-5) for x in REFERENCE.losses), grad_norm0=1.5)
    assert divergence(record, REFERENCE, "fp32") is None


def test_an_fp32_trial_past_1e_4_is_diverged_with_its_gap_and_step():
    record = NumericsRecord(losses=(7.6, 7.5, 7.4, 7.3 * 1.001), grad_norm0=1.5)
    reason = divergence(record, REFERENCE, "fp32")
    assert reason.startswith("diverged: loss gap 1.00e-03") and "step 3" in reason


def test_a_first_gradient_norm_off_the_reference_is_diverged_even_when_the_losses_agree():
    record = NumericsRecord(losses=REFERENCE.losses, grad_norm0=1.5 * 1.2)
    assert divergence(record, REFERENCE, "bf16").startswith("diverged: first gradient norm")


def test_a_bf16_trial_inside_the_measured_band_passes_and_a_skipped_update_does_not():
    noisy = NumericsRecord(losses=tuple(x * (1 + 4e-4) for x in REFERENCE.losses), grad_norm0=1.5 * (1 + 1e-3))
    assert divergence(noisy, REFERENCE, "bf16") is None
    skipped = NumericsRecord(losses=(7.6, 7.6, 7.5, 7.4), grad_norm0=1.5)
    assert divergence(skipped, REFERENCE, "bf16") is not None


def test_the_gradient_norm_band_grows_with_the_square_root_of_the_parameter_count():
    small, large = grad_norm_tolerance("fp32", 10**6), grad_norm_tolerance("fp32", 10**8)
    assert small == pytest.approx(SUMMATION_LAMBDA * 1e3 * FP32_UNIT_ROUNDOFF)
    assert large == pytest.approx(10 * small)
    assert grad_norm_tolerance("fp32", 1000) == RELATIVE_GRAD_NORM_TOLERANCE["fp32"]  # never below the measured band
    assert grad_norm_tolerance("bf16", 10**14) == MAX_GRAD_NORM_TOLERANCE


def test_a_118m_model_s_reordered_gradient_norm_passes_and_a_wrong_scale_does_not():
    """The 118M ZeRO-2 fp32 trial's first gradient norm was 3.3e-4 off its reference by summation order."""
    params = 118_000_000
    reordered = NumericsRecord(losses=REFERENCE.losses, grad_norm0=1.5 * (1 + 3.3e-4))
    assert divergence(reordered, REFERENCE, "fp32") is not None  # the fixed band of a million-parameter model
    assert divergence(reordered, REFERENCE, "fp32", params=params) is None
    for scale in (2.0, 0.5, 0.83):  # summed instead of averaged on 2 ranks, and back; one pipeline stage's norm
        wrong = NumericsRecord(losses=REFERENCE.losses, grad_norm0=1.5 * scale)
        reason = divergence(wrong, REFERENCE, "fp32", params=params)
        assert reason.startswith("diverged: first gradient norm") and "118.0M parameters" in reason
    assert divergence(NumericsRecord(losses=REFERENCE.losses, grad_norm0=1.5 * 0.83), REFERENCE, "fp32",
                      params=10**15) is not None  # the cap keeps the smallest known bug caught at any size


def test_a_request_carries_the_reference_to_the_ranks():
    request = TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(), seq_len=32, reference=REFERENCE)
    assert TrialRequest.from_json(request.to_json()).reference == REFERENCE


def test_trials_csv_has_the_loss_gap_and_the_first_gradient_norm():
    assert {"loss_gap", "grad_norm0"} <= set(METRIC_COLUMNS)


def test_a_runner_that_leaves_no_record_gives_no_reference_and_says_why(tmp_path):
    request = reference_request(spec=PRESETS["gpt-tiny"], seq_len=32, global_batch=4, nproc=2, backend="cpu",
                                workdir=tmp_path, timeout_s=60, seed=1)
    reference, why = run_reference(lambda _: TrialResult(status="ok"), request)
    assert reference is None and "no numerics record" in why


# ---- real trials on 2 CPU ranks --------------------------------------------------------------

GLOBAL_BATCH = 8
QUICK = MeasurePolicy(warmup_steps=0, min_steps=1, max_steps=1)


@pytest.fixture(scope="module")
def gpt_reference(tmp_path_factory) -> NumericsRecord:
    request = reference_request(spec=PRESETS["gpt-tiny"], seq_len=32, global_batch=GLOBAL_BATCH, nproc=2,
                                backend="cpu", workdir=tmp_path_factory.mktemp("reference"), timeout_s=120, seed=1)
    reference, why = run_reference(run_trial, request)
    assert reference is not None, why
    return reference


def gated(tmp_path, reference, *, fault=None, **knobs) -> TrialRequest:
    micro_batch = knobs.pop("micro_batch", 2)
    point = Point(micro_batch=micro_batch, grad_accum=GLOBAL_BATCH // (2 * micro_batch), **knobs)
    return TrialRequest(spec=PRESETS["gpt-tiny"], point=point, seq_len=32, nproc=2, workdir=tmp_path,
                        timeout_s=120, measure=QUICK, seed=1, reference=reference, fault=fault)


@pytest.mark.nightly
@pytest.mark.slow
def test_the_reference_run_records_the_gate_s_losses_and_first_gradient_norm(gpt_reference):
    assert len(gpt_reference.losses) == GATE_STEPS and all(7 < loss < 8 for loss in gpt_reference.losses)
    assert gpt_reference.grad_norm0 > 0


@pytest.mark.nightly
@pytest.mark.slow
def test_a_zero_3_trial_with_another_accumulation_matches_the_reference(tmp_path, gpt_reference):
    result = run_trial(gated(tmp_path, gpt_reference, zero_stage=3, micro_batch=2))
    assert result.ok, result.reason
    assert result.loss_gap < 1e-4 and result.grad_norm0 == pytest.approx(gpt_reference.grad_norm0, rel=1e-4)
    assert read_record(tmp_path).losses != gpt_reference.losses  # measured, not copied: sums in another order


@pytest.mark.slow
def test_a_trial_that_trains_other_data_is_diverged_and_never_timed(tmp_path, gpt_reference):
    result = run_trial(gated(tmp_path, gpt_reference, fault="stale_batch"))
    assert result.status == "failed" and result.failure_kind == "diverged", result.reason
    assert result.loss_gap > 1e-4 and result.steps == 0 and result.tokens_per_s is None
    assert result.grad_norm0 == pytest.approx(gpt_reference.grad_norm0, rel=1e-4)  # the first step was right
