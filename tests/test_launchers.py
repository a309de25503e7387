"""Launchers by name: the registry the session opens runners from."""

import pytest

from autoscale.engine import open_runner, run_trial, selectable_launchers
from autoscale.engine.fallback import FallbackToFresh
from autoscale.engine.environment import accelerator_environment
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
