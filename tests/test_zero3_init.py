"""ZeRO-3 trials build the model partitioned (`deepspeed.zero.Init`) with the whole build's weights."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from autoscale.ds_config import to_ds_config
from autoscale.engine import MeasurePolicy, TrialRequest, run_trial
from autoscale.engine.launch import free_port
from autoscale.engine.numerics import NumericsRecord, run_reference
from autoscale.engine.request import reference_request
from autoscale.models import PRESETS
from autoscale.models.gpt import build_model
from autoscale.point import Point

NPROC = 2
GLOBAL_BATCH = 8
SEQ_LEN = 32
SEED = 7


def test_a_model_built_in_bf16_holds_the_fp32_build_s_weights_rounded():
    """What zero.Init relies on: the weights do not depend on the dtype the modules are built in."""
    spec = PRESETS["llama-tiny"]
    whole = build_model(spec, seed=SEED)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        half = build_model(spec, seed=SEED)
    finally:
        torch.set_default_dtype(default_dtype)
    for (name, expected), (_, got) in zip(whole.named_parameters(), half.named_parameters()):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, expected.to(torch.bfloat16), rtol=0, atol=0, msg=name)


def test_the_seed_chooses_the_weights():
    spec = PRESETS["gpt-tiny"]
    first, again, other = (build_model(spec, seed=seed).blocks[0].mlp.up.weight for seed in (SEED, SEED, SEED + 1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def _build_on_rank(rank: int, port: int, model: str, precision: str, zero_stage: int, out: str) -> None:
    """One of NPROC ranks: build the trial's model, record this rank's parameter elements right
    after the build and (rank 0) the whole weights gathered from the partitions."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(NPROC), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    import deepspeed

    from autoscale.engine.build import build_trial_model
    from autoscale.engine.rank import init_distributed

    init_distributed("cpu", trial_timeout_s=120)
    point = Point(zero_stage=zero_stage, precision=precision, micro_batch=1, grad_accum=4)
    request = TrialRequest(spec=PRESETS[model], point=point, seq_len=SEQ_LEN, seed=SEED)
    built = build_trial_model(request, to_ds_config(point, world_size=NPROC))
    parameters = list(built.parameters())
    resident = sum(p.data.numel() for p in parameters)
    partitions = sum(p.ds_tensor.numel() for p in parameters if hasattr(p, "ds_tensor"))
    with deepspeed.zero.GatheredParameters(parameters):
        weights = {name: p.detach().clone() for name, p in built.named_parameters()}
    buffers = {name: b.clone() for name, b in built.named_buffers()}
    if rank == 0:
        torch.save(dict(resident=resident, partitions=partitions, weights=weights, buffers=buffers), out)


def build_on_two_ranks(tmp_path, *, model: str, precision: str = "fp32", zero_stage: int = 3) -> dict:
    out = tmp_path / "rank0.pt"
    context = multiprocessing.get_context("spawn")
    port = free_port()
    ranks = [context.Process(target=_build_on_rank, args=(rank, port, model, precision, zero_stage, str(out)))
             for rank in range(NPROC)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=180)
    assert all(process.exitcode == 0 for process in ranks), [process.exitcode for process in ranks]
    return torch.load(out)


@pytest.mark.nightly
@pytest.mark.slow
@pytest.mark.parametrize("model", ["gpt-tiny", "llama-tiny"])
def test_a_zero_3_model_is_partitioned_from_construction_and_holds_the_whole_build_s_weights(tmp_path, model):
    built = build_on_two_ranks(tmp_path, model=model)
    whole = build_model(PRESETS[model], seed=SEED)
    total = sum(p.numel() for p in whole.parameters())
    assert built["resident"] == 0  # every parameter is an empty placeholder outside its module's forward
    assert total / NPROC <= built["partitions"] < total / NPROC + NPROC * len(list(whole.parameters()))
    for name, expected in whole.named_parameters():
        assert torch.equal(built["weights"][name], expected), name
    for name, expected in whole.named_buffers():  # rotary tables: built in fp32, never partitioned
        assert torch.equal(built["buffers"][name], expected), name


@pytest.mark.nightly
@pytest.mark.slow
def test_a_bf16_zero_3_model_holds_the_whole_build_s_weights_rounded(tmp_path):
    built = build_on_two_ranks(tmp_path, model="llama-tiny", precision="bf16")
    for name, expected in build_model(PRESETS["llama-tiny"], seed=SEED).named_parameters():
        assert torch.equal(built["weights"][name], expected.to(torch.bfloat16)), name


@pytest.mark.nightly
@pytest.mark.slow
def test_below_zero_3_every_rank_builds_the_whole_model(tmp_path):
    built = build_on_two_ranks(tmp_path, model="gpt-tiny", zero_stage=2)
    assert built["partitions"] == 0 and built["resident"] == PRESETS["gpt-tiny"].param_count()


@pytest.fixture(scope="module")
def gpt_reference(tmp_path_factory) -> NumericsRecord:
    record, why = run_reference(run_trial, reference_request(
        spec=PRESETS["gpt-tiny"], seq_len=SEQ_LEN, global_batch=GLOBAL_BATCH, nproc=NPROC, backend="cpu",
        workdir=tmp_path_factory.mktemp("reference"), timeout_s=120, seed=SEED))
    assert record is not None, why
    return record


@pytest.mark.slow
def test_a_zero_3_trial_passes_the_numerics_gate_against_the_zero_0_reference(tmp_path, gpt_reference):
    point = Point(zero_stage=3, micro_batch=2, grad_accum=GLOBAL_BATCH // (2 * NPROC))
    result = run_trial(TrialRequest(spec=PRESETS["gpt-tiny"], point=point, seq_len=SEQ_LEN, nproc=NPROC,
                                    workdir=tmp_path, timeout_s=120, seed=SEED, reference=gpt_reference,
                                    measure=MeasurePolicy(warmup_steps=0, min_steps=1, max_steps=1)))
    assert result.ok, result.reason
    assert result.loss_gap < 1e-5  # fp32: the same weights and batches, summed in another order
    assert result.grad_norm0 == pytest.approx(gpt_reference.grad_norm0, rel=1e-5)
