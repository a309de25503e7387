"""Real DeepSpeed trials of gpt-tiny on 2 CPU ranks: every stage trains, every fault is recorded."""

import json
import math
import signal

import psutil
import pytest

from autoscale.engine import TrialRequest, run_trial
from autoscale.models import PRESETS
from autoscale.point import Point

pytestmark = pytest.mark.slow


def request(tmp_path, quick_measure, **point_fields) -> TrialRequest:
    fields = dict(zero_stage=0, micro_batch=2, grad_accum=2)
    fault = point_fields.pop("fault", None)
    timeout_s = point_fields.pop("timeout_s", 120.0)
    fields.update(point_fields)
    return TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(**fields), seq_len=64, backend="cpu", nproc=2,
                        workdir=tmp_path, timeout_s=timeout_s, measure=quick_measure, fault=fault)


def assert_measured(result):
    assert result.status == "ok", result.reason
    assert result.tokens_per_s > 0 and result.tflops_per_device > 0 and 0 < result.mfu < 1
    assert len(result.peak_bytes_per_rank) == 2 and result.peak_bytes == max(result.peak_bytes_per_rank)
    assert result.peak_bytes > 50 * 2**20  # a real process's resident set, not an estimate
    assert math.isfinite(result.loss) and 2 <= result.steps <= 3
    assert 0 < result.launch_s < result.wall_s


@pytest.mark.nightly
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_every_zero_stage_trains_gpt_tiny_on_two_ranks(tmp_path, quick_measure, stage):
    assert_measured(run_trial(request(tmp_path, quick_measure, zero_stage=stage)))


@pytest.mark.nightly
@pytest.mark.parametrize("stage, checkpointing", [(1, "full"), (3, "selective")])
def test_bf16_with_checkpointing_trains(tmp_path, quick_measure, stage, checkpointing):
    assert_measured(run_trial(request(tmp_path, quick_measure, zero_stage=stage, precision="bf16",
                                      checkpointing=checkpointing)))


@pytest.mark.nightly
def test_optimizer_offload_trains(tmp_path, quick_measure):
    assert_measured(run_trial(request(tmp_path, quick_measure, zero_stage=2, offload="cpu")))


@pytest.mark.nightly
def test_an_offloaded_optimizer_is_deepspeed_s_cpu_adam_and_otherwise_torch_s_adamw():
    import torch
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    from autoscale.engine.step_loop import build_optimizer

    parameters = [torch.nn.Parameter(torch.zeros(4))]
    assert isinstance(build_optimizer(parameters, offloaded=True, backend="cpu"), DeepSpeedCPUAdam)
    assert type(build_optimizer(parameters, offloaded=False, backend="cpu")) is torch.optim.AdamW


def test_the_trial_runs_the_config_it_was_given(tmp_path, quick_measure):
    run_trial(request(tmp_path, quick_measure, zero_stage=2, micro_batch=1, grad_accum=4))
    written = json.loads((tmp_path / "ds_config.json").read_text())
    assert written["zero_optimization"]["stage"] == 2
    assert (written["train_micro_batch_size_per_gpu"], written["gradient_accumulation_steps"]) == (1, 4)


def no_rank_processes_left(workdir) -> bool:
    marker = str(workdir / "request.json")
    return not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


@pytest.mark.nightly
def test_a_crashing_rank_is_a_failed_trial_with_its_reason(tmp_path, quick_measure):
    result = run_trial(request(tmp_path, quick_measure, fault="crash"))
    assert result.status == "failed" and result.reason.startswith("crash: rank0: RuntimeError: injected crash")
    assert no_rank_processes_left(tmp_path)


def test_a_hung_trial_is_killed_with_its_whole_process_group(tmp_path, quick_measure):
    result = run_trial(request(tmp_path, quick_measure, fault="hang", timeout_s=25))
    assert result.status == "failed" and result.reason.startswith("timeout:")
    assert 25 <= result.wall_s < 40
    assert no_rank_processes_left(tmp_path)


@pytest.mark.nightly
def test_nan_loss_is_a_failed_trial(tmp_path, quick_measure):
    result = run_trial(request(tmp_path, quick_measure, fault="nan"))
    assert result.status == "failed" and result.reason.startswith("nan:")


@pytest.mark.nightly
def test_an_allocation_the_machine_cannot_hold_is_an_oom(tmp_path, quick_measure):
    result = run_trial(request(tmp_path, quick_measure, fault="oom"))
    assert result.status == "failed" and result.reason.startswith("oom:")


@pytest.mark.nightly
def test_a_rank_killed_by_the_kernel_reads_as_oom(tmp_path, quick_measure):
    """SIGKILL from outside (the kernel's OOM killer sends it) is classified as oom."""
    from autoscale.engine import launch

    class Dead:
        returncode = -signal.SIGKILL

    assert launch.failure_reason(tmp_path, [Dead()]).startswith("oom: rank0 killed by SIGKILL")


def test_the_gate_s_steps_past_the_warm_up_are_the_first_timed_steps_and_a_measured_again_trial_has_none(tmp_path):
    from dataclasses import replace

    from autoscale.engine import MeasurePolicy
    from autoscale.engine.numerics import GATE_STEPS

    two = MeasurePolicy(warmup_steps=GATE_STEPS - 2, min_steps=2, max_steps=2, target_rse=1.0, max_measure_s=20)
    gated = run_trial(replace(request(tmp_path / "gated", two), measure=two))
    assert gated.ok and gated.steps == 2, gated.reason
    assert gated.phases.timed_s < gated.phases.gate_s / 2  # both timed steps were the gate's last two
    again = run_trial(replace(request(tmp_path / "again", two), measure=two, gate=False))
    assert again.ok and again.steps == 2 and again.phases.gate_s < again.phases.warmup_s
