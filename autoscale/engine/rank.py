"""One rank of a trial: build the model, hand it to DeepSpeed, train on synthetic tokens, measure.

Run as `python -m autoscale.engine.rank REQUEST.json RESULT.json` with the usual torch.distributed
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `train_and_measure` is the
per-trial part, kept apart from process start-up so a long-lived worker can call it repeatedly.
Any failure is written to `rank<r>.error.json` as a kind (oom, nan, crash) and a message.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch

from autoscale.engine.build import build_trial_model
from autoscale.engine.data import micro_batch_tokens
from autoscale.engine.memcap import apply_memory_cap, cap_note, capped, lift_memory_cap
from autoscale.engine.measure import DevicePeak, relative_standard_error, reset_peak_memory
from autoscale.engine.parallel import data_parallel_coordinates, splits_the_model, trial_ds_config
from autoscale.engine.numerics import NumericsRecord, gate_steps, loss_gap, write_record
from autoscale.engine.outcome import mentions_oom
from autoscale.engine.sequence_trial import sequence_trial
from autoscale.engine.request import RANK_FAILED_EXIT_CODE, STARTED_MARKER, TrialPhases, TrialRequest
from autoscale.engine.step_loop import (NonFiniteLoss, RankOutcome, StepTimes, build_optimizer, inject_fault,
                                        time_after_gate, trial_device)

COLLECTIVE_TIMEOUT_SHARE = 0.8  # of the trial's timeout: a hung NCCL collective fails before the launcher's kill
COLLECTIVE_TIMEOUT_MARKERS = ("watchdog caught collective operation timeout",)


def train_and_measure(request: TrialRequest, *, rank: int, world_size: int, local_rank: int) -> RankOutcome:
    """Train the gate's steps on the layout-independent stream (`engine.data`), stop there when they
    leave the reference's band, then warm up and time steps until the step time is stable."""
    import deepspeed
    import torch.distributed as dist

    from autoscale.ds_config import to_ds_config

    point, spec = request.point, request.spec
    if point.pp > 1:
        from autoscale.engine.pipeline_trial import train_pipeline

        return train_pipeline(request, rank=rank, world_size=world_size, local_rank=local_rank)
    device = trial_device(request.backend, local_rank)
    reset_peak_memory(request.backend)
    device_peak = DevicePeak.for_backend(request.backend, local_rank)
    torch.manual_seed(request.seed)
    config = trial_ds_config(request.ds_config or to_ds_config(point, world_size=world_size), point, spec,
                             request.hf_config)
    sequence = sequence_trial(point, config, fault=request.fault)
    model = build_trial_model(request, config, sequence.split)
    optimizer = build_optimizer(model.parameters(), offloaded=point.offload != "none", backend=request.backend)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config, mpu=sequence.mpu)
    data_parallel_rank, data_parallel = data_parallel_coordinates(engine, rank=rank, world_size=world_size,
                                                                  sp=point.sp)

    def optimizer_step(step: int, *, keep_grad_norm: bool = False) -> torch.Tensor:
        """One optimizer step; this rank's mean loss over its micro-steps, as a tensor on the host."""
        losses = []
        for micro_step in range(point.grad_accum):
            inputs, targets = micro_batch_tokens(
                step=0 if request.fault == "stale_batch" else step,  # test-only: a loader that never advances
                micro_step=micro_step, data_parallel_rank=data_parallel_rank,
                data_parallel=data_parallel, micro_batch=point.micro_batch, grad_accum=point.grad_accum,
                seed=request.seed, seq_len=request.seq_len, vocab_size=spec.vocab_size)
            inputs, targets = sequence.local(inputs, targets)
            loss = engine(inputs.to(device), targets.to(device))
            engine.backward(sequence.for_backward(loss))
            if keep_grad_norm and micro_step == point.grad_accum - 1:
                nonlocal own_grad_norm
                own_grad_norm = replica_grad_norm(engine)  # before the step clears the gradients
            engine.step()
            losses.append(sequence.replica_loss(loss.detach().float()))
        mean = torch.stack(losses).mean().cpu()  # synchronises the device
        if not math.isfinite(mean.item()):
            raise NonFiniteLoss(f"loss is {mean.item()}")
        return mean

    own_grad_norm: float | None = None
    train_start = time.time()
    if rank == 0:
        (request.workdir / STARTED_MARKER).touch()
    steps = gate_steps(request)
    gate_losses = torch.zeros(steps, dtype=torch.float64)
    grad_norm0 = None
    early = StepTimes()
    for step in range(steps):
        with early.step(request, step):
            inject_fault(request, rank, step, engine)
            gate_losses[step] = optimizer_step(step, keep_grad_norm=step == 0).double()
        device_peak.sample()
        if step == 0:
            grad_norm0 = engine.get_global_grad_norm()
            grad_norm0 = float(grad_norm0) if grad_norm0 is not None else own_grad_norm
    dist.all_reduce(gate_losses)  # every rank of a replica reports its replica's loss: the mean over ranks
    gate_losses /= world_size
    dist.broadcast(gate_losses, src=0)  # one verdict on every rank
    numerics = NumericsRecord(losses=tuple(gate_losses.tolist()), grad_norm0=grad_norm0)
    return time_after_gate(request, numerics, rank=rank, world_size=world_size, engine=engine,
                           device_peak=device_peak, optimizer_step=optimizer_step, device=device,
                           train_start=train_start, early=early)


def replica_grad_norm(engine) -> float | None:
    """The global 2-norm of the gradients the module's parameters hold, where they hold them (ZeRO-0,
    whose fp32 path clips without keeping the norm); None where ZeRO keeps them in its partitions.
    Tensor-parallel shards are summed over their group and replicated parameters counted once, by
    DeepSpeed's own clipping function with no limit (it scales every gradient by 1)."""
    parameters = [p for p in engine.module.parameters() if p.requires_grad]
    if not parameters or any(p.grad is None for p in parameters):
        return None
    if splits_the_model(engine):
        from deepspeed.runtime.utils import clip_grad_norm_

        return float(clip_grad_norm_(parameters, max_norm=math.inf, mpu=engine.mpu))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float())
                                                       for p in parameters])))


def summarise(request: TrialRequest, outcome: RankOutcome, *, world_size: int, launch_time: float,
              peak_flops_per_device: float, devices: int, joined_time: float | None = None) -> dict:
    """Rank 0's numbers for the trial, from its step times and every rank's peak; a failed trial
    with its loss gap when the gate's steps diverged from the reference."""
    point = request.point
    record = outcome.numerics
    gap = loss_gap(record.losses, request.reference.losses) if request.reference and record else None
    joined_time = launch_time if joined_time is None else joined_time
    phases = TrialPhases(start_s=joined_time - launch_time, build_s=outcome.train_start_time - joined_time,
                         gate_s=outcome.gate_s, warmup_s=outcome.warmup_s, timed_s=outcome.timed_s)
    numerics = dict(loss_gap=gap, grad_norm0=record.grad_norm0 if record else None, phases=asdict(phases))
    if outcome.diverged is not None:
        return dict(status="failed", reason=outcome.diverged, loss=outcome.loss,
                    launch_s=outcome.train_start_time - launch_time, **numerics)
    samples_per_step = point.global_batch(world_size)
    total_s = sum(outcome.step_times_s)
    steps = len(outcome.step_times_s)
    tokens_per_s = samples_per_step * request.seq_len * steps / total_s
    flops_per_s = tokens_per_s * request.spec.train_flops_per_token(request.seq_len)
    return dict(
        status="ok",
        tokens_per_s=tokens_per_s,
        samples_per_s=samples_per_step * steps / total_s,
        tflops_per_device=flops_per_s / devices / 1e12,
        mfu=flops_per_s / (peak_flops_per_device * devices) if peak_flops_per_device else None,
        peak_bytes=max(outcome.peak_bytes_per_rank),
        peak_bytes_per_rank=outcome.peak_bytes_per_rank,
        peak_allocator_bytes=max((b for b in outcome.peak_allocator_bytes_per_rank if b is not None), default=None),
        loss=outcome.loss,
        steps=steps,
        step_s=statistics.median(outcome.step_times_s),
        step_cpu_s=statistics.median(outcome.step_cpu_times_s) if outcome.step_cpu_times_s else None,
        step_rse=relative_standard_error(outcome.step_times_s) if steps > 1 else None,
        launch_s=outcome.train_start_time - launch_time,
        **numerics,
    )


def classify(error: BaseException) -> str:
    """The failure kind of an exception raised while training."""
    if isinstance(error, NonFiniteLoss):
        return "nan"
    text = str(error).lower()
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)) or mentions_oom(text):
        return "oom"
    if any(marker in text for marker in COLLECTIVE_TIMEOUT_MARKERS):
        return "timeout"
    return "crash"


def error_record(error: BaseException) -> dict:
    message = str(error).strip().splitlines()
    kind = classify(error)
    if kind == "crash" and capped() and isinstance(error, SystemError):
        kind = "oom"  # C code whose allocation the cap refused, returning NULL without a MemoryError
    text = f"{type(error).__name__}: {message[0] if message else ''}"[:300]
    return {"kind": kind, "message": text + (cap_note() if kind == "oom" else "")}


def _configure_quiet_logging() -> None:
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)


def init_distributed(backend: str, *, trial_timeout_s: float) -> None:
    """Join the trial's process group. On CUDA its collectives time out before the trial does, so
    NCCL's watchdog (with TORCH_NCCL_ASYNC_ERROR_HANDLING, set by the launcher) ends a hung
    collective with an error the rank can report; on CPU the launcher's kill at the timeout does."""
    import deepspeed

    _configure_quiet_logging()
    if backend == "cpu":
        # DeepSpeed's shared-memory all-reduce serves only ranks launched with LOCAL_SIZE set, which
        # we never set; not loading it spares every rank a JIT build check and its file lock, which
        # a rank killed mid-build (a timeout) would leave behind for every later rank to wait on.
        # By its name in sys.modules: `import deepspeed.comm.torch as ...` yields torch itself, which
        # deepspeed.comm's `from .comm import *` binds to the package's attribute `torch`.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    if backend == "cuda":
        deepspeed.init_distributed(dist_backend="nccl",
                                   timeout=timedelta(seconds=max(1.0, COLLECTIVE_TIMEOUT_SHARE * trial_timeout_s)))
    else:
        deepspeed.init_distributed(dist_backend="gloo")


def run_rank(request: TrialRequest, result_path: Path, *, launch_time: float, joined_time: float | None = None) -> bool:
    """This rank's part of one trial; rank 0 writes the result. False (and an error file) on failure."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    try:
        outcome = train_and_measure(request, rank=rank, world_size=world_size, local_rank=local_rank)
    except BaseException as error:  # noqa: BLE001 - every failure must reach the parent with a kind
        record_failure(error, result_path.parent, rank)
        return False
    if rank == 0:
        from autoscale.hardware import detect

        hardware = detect(request.backend)
        devices = 1 if request.backend == "cpu" else world_size  # CPU ranks share one device
        summary = summarise(request, outcome, world_size=world_size, launch_time=launch_time,
                            peak_flops_per_device=hardware.peak_flops(request.point.precision), devices=devices,
                            joined_time=joined_time)
        write_record(outcome.numerics, result_path.parent)
        result_path.write_text(json.dumps(summary))
    return True


def record_failure(error: BaseException, workdir: Path, rank: int) -> None:
    lift_memory_cap()  # a rank stopped at its cap must still be able to say so
    record = error_record(error)
    partial = workdir / f"rank{rank}.error.json.tmp"
    partial.write_text(json.dumps(record))
    partial.replace(workdir / f"rank{rank}.error.json")  # whole or absent: the launcher may read it any time
    print(f"rank {rank}: {record['kind']}: {record['message']}", file=sys.stderr, flush=True)


def run_rank_process(request_path: Path, result_path: Path, *, launch_time: float) -> int:
    """A rank's whole life in one trial, fresh or forked: join the group, train, report; its exit code."""
    request = TrialRequest.from_json(request_path.read_text())
    try:
        init_distributed(request.backend, trial_timeout_s=request.timeout_s)
        apply_memory_cap(request)  # after the group: a cap met inside gloo's C++ aborts or hangs instead of raising
    except BaseException as error:  # noqa: BLE001
        record_failure(error, result_path.parent, int(os.environ["RANK"]))
        return RANK_FAILED_EXIT_CODE
    joined_time = time.time()
    return 0 if run_rank(request, result_path, launch_time=launch_time, joined_time=joined_time) else RANK_FAILED_EXIT_CODE


def main(argv: list[str]) -> int:
    launch_time = float(os.environ.get("AUTOSCALE_LAUNCH_TIME", time.time()))
    return run_rank_process(Path(argv[0]), Path(argv[1]), launch_time=launch_time)


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: gloo's threads can abort() in C++ destructors after the result is
    # written ("terminate called without an active exception", about 1 trial in 25 here)
    os._exit(exit_code)
