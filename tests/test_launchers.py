"""Launchers by name: the registry the session opens runners from."""

import pytest

from autoscale.engine import open_runner, run_trial, selectable_launchers
from autoscale.engine.fallback import FallbackToFresh
from autoscale.engine.launch import accelerator_environment
from autoscale.engine.launchers import LAUNCHERS
from autoscale.errors import UserError


def test_the_user_picks_warm_fresh_or_slurm_and_warm_is_the_default():
    assert selectable_launchers() == ("warm", "fresh", "slurm")
    assert set(LAUNCHERS) == {"warm", "fresh", "hostfile", "slurm"}


def test_the_fresh_launcher_runs_trials_in_new_processes(tmp_path):
    with open_runner("fresh", run_dir=tmp_path, backend="cpu") as runner:
        assert runner is run_trial


def test_the_warm_launcher_falls_back_to_fresh_and_starts_no_ranks_until_a_trial(tmp_path):
    with open_runner("warm", run_dir=tmp_path, backend="cpu", on_fallback=print) as runner:
        assert isinstance(runner, FallbackToFresh) and runner.fresh is run_trial
        assert runner.warm.processes == []


def test_a_study_s_warm_launcher_starts_its_ranks_at_once_and_its_first_trial_waits_for_the_rest(tmp_path):
    """The servers import torch and DeepSpeed while the study sets up; what the study waited is pool_start_s."""
    from autoscale.engine import MeasurePolicy, TrialRequest
    from autoscale.models import PRESETS
    from autoscale.point import Point

    with open_runner("warm", run_dir=tmp_path, backend="cpu", nproc=2) as runner:
        assert len(runner.warm.processes) == 2 and not runner.warm.ready
        result = runner(TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(micro_batch=4, grad_accum=2), seq_len=32,
                                     nproc=2, workdir=tmp_path / "trial", timeout_s=120,
                                     measure=MeasurePolicy(warmup_steps=1, min_steps=2, max_steps=2)))
        assert result.ok and runner.warm.ready and runner.warm.starts == 1, result.reason
        assert 0 < runner.pool_start_s < result.wall_s + runner.pool_start_s


def test_the_hostfile_launcher_sends_the_backend_s_accelerator_to_every_node(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=2\n")
    with open_runner("hostfile", run_dir=tmp_path, backend="cuda", hostfile=hostfile, master_addr="node-a") as runner:
        assert runner.extra_env == accelerator_environment("cuda")
        assert runner.extra_env["DS_ACCELERATOR"] == "cuda"


def test_an_unknown_launcher_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(UserError, match="--launcher must be one of warm, fresh, slurm, got 'turbo'"):
        open_runner("turbo", run_dir=tmp_path, backend="cpu")


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_every_backend_names_its_accelerator_so_deepspeed_never_probes_cuda(backend):
    env = accelerator_environment(backend)
    assert env["DS_ACCELERATOR"] == backend and env["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    assert ("TORCH_NCCL_ASYNC_ERROR_HANDLING" in env) == (backend == "cuda")
