"""One rank of a pipeline-parallel trial (pp > 1): DeepSpeed's pipeline engine over `models.pipeline`.

`engine.train_batch` runs one optimizer step: grad_accum micro-batches through the stages (1F1B,
Narayanan et al. 2021, Sec. 2.2), the gradient reduction and the step. It reads its micro-batches
from an iterator, the same layout-independent stream as every trial (`engine.data`), dealt by the
pipe's data-parallel rank, and returns the step's loss averaged over micro-batches and replicas on
every rank: the global batch's mean loss the numerics gate compares. The gate and the timed steps
are those of `engine.step_loop`, as for every trial.
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import torch

from autoscale.engine.data import micro_batch_tokens
from autoscale.engine.measure import DevicePeak, reset_peak_memory
from autoscale.engine.numerics import NumericsRecord, gate_steps
from autoscale.engine.parallel import data_parallel_coordinates, trial_ds_config
from autoscale.engine.request import STARTED_MARKER, TrialRequest
from autoscale.engine.step_loop import (NonFiniteLoss, StepTimes, build_optimizer, inject_fault, time_after_gate,
                                        trial_device)


def step_batches(request: TrialRequest, *, step: int, data_parallel_rank: int, data_parallel: int
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (inputs, targets) micro-batches of optimizer step `step` for one pipe's replica, in order."""
    point = request.point
    for micro_step in range(point.grad_accum):
        yield micro_batch_tokens(step=step, micro_step=micro_step, data_parallel_rank=data_parallel_rank,
                                 data_parallel=data_parallel, micro_batch=point.micro_batch,
                                 grad_accum=point.grad_accum, seed=request.seed, seq_len=request.seq_len,
                                 vocab_size=request.spec.vocab_size)


def record_clipping_norms(engine) -> list[float]:
    """The norms DeepSpeed's fp32 path (ZeRO-0) clips by, one per step, as this rank computes it.

    DeepSpeed 0.19.8 clips there with `clip_grad_norm_(module parameters, mpu=the pipe grid)`, whose
    sum over the "model-parallel" group is, in a pipeline, the group of one stage: each stage clips by
    the norm of its own parameters. That call returns the norm and the engine drops it
    (`get_global_grad_norm()` is None), so the same call is made here, keeping what it returns."""
    from deepspeed.runtime.utils import clip_grad_norm_

    norms: list[float] = []

    def clip_and_keep() -> None:
        norms.append(float(clip_grad_norm_(parameters=engine.module.parameters(),
                                           max_norm=engine.gradient_clipping(), mpu=engine.mpu)))

    engine.clip_fp32_gradients = clip_and_keep
    return norms


def train_pipeline(request: TrialRequest, *, rank: int, world_size: int, local_rank: int):
    """`engine.rank.train_and_measure` for a pipeline-parallel point."""
    import deepspeed
    import torch.distributed as dist

    from autoscale.ds_config import to_ds_config
    from autoscale.models.pipeline import build_pipeline_model

    point, spec = request.point, request.spec
    device = trial_device(request.backend, local_rank)
    reset_peak_memory(request.backend)
    device_peak = DevicePeak.for_backend(request.backend, local_rank)
    torch.manual_seed(request.seed)
    model = build_pipeline_model(spec, stages=point.pp, kernels=point.kernels, checkpointing=point.checkpointing,
                                 seed=request.seed)
    optimizer = build_optimizer(model.parameters(), offloaded=point.offload != "none", backend=request.backend)
    config = trial_ds_config(request.ds_config or to_ds_config(point, world_size=world_size), point, spec)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    data_parallel_rank, data_parallel = data_parallel_coordinates(engine, rank=rank, world_size=world_size)
    clipping_norms = record_clipping_norms(engine) if not engine.zero_optimization() else []

    def optimizer_step(step: int) -> torch.Tensor:
        """One optimizer step; the global batch's mean loss, as a tensor on the host."""
        loss = engine.train_batch(data_iter=step_batches(request, step=step, data_parallel_rank=data_parallel_rank,
                                                         data_parallel=data_parallel))
        mean = loss.detach().float().cpu()
        if not math.isfinite(mean.item()):
            raise NonFiniteLoss(f"loss is {mean.item()}")
        return mean

    train_start = time.time()
    if rank == 0:
        (request.workdir / STARTED_MARKER).touch()
    steps = gate_steps(request)
    gate = torch.zeros(steps + 1, dtype=torch.float64)  # the losses, then the first gradient norm
    gate[-1] = math.nan
    early = StepTimes()
    for step in range(steps):
        with early.step(request, step):
            inject_fault(request, rank, step, engine)
            gate[step] = optimizer_step(step).double()
        device_peak.sample()
        if step == 0:
            grad_norm0 = engine.get_global_grad_norm() if engine.zero_optimization() else next(iter(clipping_norms), None)
            gate[-1] = math.nan if grad_norm0 is None else float(grad_norm0)
    dist.broadcast(gate, src=0)  # rank 0's record and one verdict on every rank (stages' own norms differ)
    numerics = NumericsRecord(losses=tuple(gate[:-1].tolist()),
                              grad_norm0=None if math.isnan(gate[-1].item()) else gate[-1].item())
    return time_after_gate(request, numerics, rank=rank, world_size=world_size, engine=engine,
                           device_peak=device_peak, optimizer_step=optimizer_step, device=device,
                           train_start=train_start, early=early)
