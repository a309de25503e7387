"""The environment a rank process starts with: set by whatever starts it (a launcher, the warm pool's
fork server, the op-build child), before torch or DeepSpeed is imported in it.

Its own module because both sides need it: the launchers that start ranks and the op builder
(`engine.ops`) that the launchers call first.
"""

from __future__ import annotations

import os


def accelerator_environment(backend: str) -> dict[str, str]:
    """What every rank of a backend needs before torch or DeepSpeed is imported.

    DS_ACCELERATOR names the accelerator, so DeepSpeed never probes for one (its probe asks
    `torch.cuda.is_available()`, which initialises the CUDA driver unless NVML answers, and a
    process forked after that cannot use CUDA). PYTORCH_NVML_BASED_CUDA_CHECK makes torch's own
    availability checks ask NVML. TORCH_NCCL_ASYNC_ERROR_HANDLING lets NCCL's watchdog end a rank
    whose collective hangs or whose peer died, instead of leaving it waiting.
    """
    env = {"DS_ACCELERATOR": backend, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
    if backend == "cuda":
        env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
    return env


def rank_environment(backend: str, nproc: int, *, port: int, launch_time: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(nproc),
               AUTOSCALE_LAUNCH_TIME=repr(launch_time), PYTHONUNBUFFERED="1")
    env.update(accelerator_environment(backend))
    if backend == "cpu":
        cores = len(os.sched_getaffinity(0))
        env.update(OMP_NUM_THREADS=str(max(1, cores // nproc)))
    return env
