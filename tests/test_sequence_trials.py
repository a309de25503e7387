"""Sequence-parallel (DeepSpeed-Ulysses) trials on 2 and 4 CPU ranks train what the data-parallel
reference trains, and the ways to get Ulysses silently wrong are caught by the numerics gate.
GPT with ZeRO-0 and Llama with ZeRO-3 at sp 2 are beside tp 2 in `test_parallel_trials`."""

import pytest
import torch

from test_parallel_trials import gpt_reference, trial  # noqa: F401 - a fixture and helpers shared

from autoscale.ds_config import from_ds_config, to_ds_config
from autoscale.engine.sequence_trial import SequenceTrial, sums_over_sequence_ranks
from autoscale.errors import RuleError
from autoscale.layout import build_point
from autoscale.models.sequence_parallel import SequenceSplit
from autoscale.models.spec import ModelSpec
from autoscale.point import Point


def test_a_sequence_parallel_point_s_ds_config_carries_sp_and_reads_back():
    point = Point(sp=2, micro_batch=2, grad_accum=2, zero_stage=3)
    config = to_ds_config(point, world_size=4)
    assert config["sequence_parallel_size"] == 2 and config["train_batch_size"] == 8
    assert from_ds_config(config) == (point, 4)


def test_sp_with_tp_is_refused_by_name():
    with pytest.raises(RuleError, match=r"tp \(--tp\) or sp \(--sp\)"):
        build_point(dict(tp=2, sp=2), global_batch=8, world_size=4)


def test_sp_must_divide_the_key_value_heads():
    spec = ModelSpec(name="gqa", n_layers=1, hidden=64, n_heads=4, n_kv_heads=1, vocab_size=16, max_seq_len=8)
    with pytest.raises(RuleError, match=r"key-value heads .* change sp \(--sp\)"):
        build_point(dict(sp=2), global_batch=8, world_size=2, spec=spec)


def test_zero_0_to_2_sum_over_sequence_ranks_and_zero_3_s_reduce_scatter_averages():
    assert all(sums_over_sequence_ranks({"zero_optimization": {"stage": stage}}) for stage in (0, 1, 2))
    assert not sums_over_sequence_ranks({"zero_optimization": {"stage": 3}})
    assert sums_over_sequence_ranks({"zero_optimization": {"stage": 3, "reduce_scatter": False}})


def test_each_sequence_rank_takes_its_contiguous_slice_of_inputs_and_targets():
    tokens = torch.arange(2 * 8).view(2, 8)
    slices = [SequenceTrial(split=SequenceSplit(group=None, rank=rank, size=4)).local(tokens, tokens + 1)
              for rank in range(4)]
    assert torch.equal(torch.cat([inputs for inputs, _ in slices], dim=1), tokens)
    assert torch.equal(slices[2][1], tokens[:, 4:6] + 1)


def test_a_sequence_sp_does_not_divide_is_refused_rather_than_cut_short():
    tokens = torch.zeros(1, 7, dtype=torch.long)
    with pytest.raises(ValueError, match="sp 2 does not divide the sequence length 7"):
        SequenceTrial(split=SequenceSplit(group=None, rank=0, size=2)).local(tokens, tokens)


@pytest.mark.nightly
@pytest.mark.slow
def test_sp_2_by_data_parallel_2_on_4_ranks_matches_the_reference(tmp_path, gpt_reference):
    result = trial("gpt-tiny", tmp_path, gpt_reference, nproc=4, sp=2, zero_stage=1)
    assert result.ok, result.reason
    assert result.loss_gap < 1e-4
    assert result.grad_norm0 == pytest.approx(gpt_reference.grad_norm0, rel=1e-4)


@pytest.mark.nightly
@pytest.mark.slow
def test_sequence_parallelism_without_the_mpu_is_diverged(tmp_path, gpt_reference):
    """Without the mpu DeepSpeed averages over the sequence ranks where the loss was scaled for a sum:
    half the gradient, which AdamW's first steps barely show in the losses (2.9e-5 here)."""
    result = trial("gpt-tiny", tmp_path, gpt_reference, sp=2, zero_stage=1, fault="sp_without_mpu")
    assert result.failure_kind == "diverged" and "first gradient norm" in result.reason, result.reason
    assert result.grad_norm0 == pytest.approx(gpt_reference.grad_norm0 / 2, rel=1e-4)


@pytest.mark.nightly
@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 3])
def test_a_loss_scaled_for_the_other_zero_stages_is_diverged(tmp_path, gpt_reference, zero_stage):
    result = trial("gpt-tiny", tmp_path, gpt_reference, sp=2, zero_stage=zero_stage, fault="sp_wrong_loss_scale")
    assert result.failure_kind == "diverged" and "first gradient norm" in result.reason, result.reason
