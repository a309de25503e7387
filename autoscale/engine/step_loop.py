"""The steps every kind of trial shares once its engine is built: the gate's verdict, the warm-up, the
timed steps until the step time is stable, and the outcome a rank reports; with the pieces each
kind's set-up uses alike (its device, its optimizer, the test-only faults).

`engine.rank` (the plain and sequence-parallel trials) and `engine.pipeline_trial` (pp > 1) both
train through here, so neither imports the other's internals.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from autoscale.engine.measure import DevicePeak, relative_standard_error
from autoscale.engine.numerics import NumericsRecord, divergence, gate_steps
from autoscale.engine.pacing import paced_steps
from autoscale.engine.request import TrialRequest


class NonFiniteLoss(RuntimeError):
    pass


@dataclass(frozen=True)
class RankOutcome:
    step_times_s: list[float]
    loss: float
    peak_bytes_per_rank: list[int]
    peak_allocator_bytes_per_rank: list[int | None]
    train_start_time: float  # time.time() at the first training step
    numerics: NumericsRecord | None = None  # the gate's steps: mean loss over the global batch, first gradient norm
    diverged: str | None = None  # the failure reason when the losses left the reference's band
    step_cpu_times_s: tuple[float, ...] = ()  # this process's CPU seconds in each timed step
    gate_s: float = 0.0  # seconds of the gate's steps, their verdict included
    warmup_s: float = 0.0  # seconds of the warm-up steps after the gate's
    timed_s: float = 0.0  # seconds from the first timed step to the stop


@dataclass
class StepTimes:
    """Wall and CPU seconds of the timed steps. The gate's steps past the warm-up count among them:
    they are ordinary steps of the trial's config, so its steps double as warm-up and as the first
    timed steps; where a conductor paces the timed steps (`engine.pacing`), it alone hands them out."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @contextmanager
    def step(self, request: TrialRequest, index: int) -> Iterator[None]:
        """Time gate step `index` when it is past the warm-up and among the gate's last `max_steps`."""
        policy = request.measure
        first_timed = max(policy.warmup_steps, gate_steps(request) - policy.max_steps)
        if index < first_timed or request.pace_socket is not None:
            yield
            return
        started, cpu_started = time.perf_counter(), time.process_time()
        yield
        self.wall.append(time.perf_counter() - started)
        self.cpu.append(time.process_time() - cpu_started)


def trial_device(backend: str, local_rank: int) -> torch.device:
    """The device this rank trains on: on CUDA its local GPU, made the current one."""
    if backend == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def inject_fault(request: TrialRequest, rank: int, step: int, engine) -> None:
    """Test-only faults, chosen by `request.fault`; each is the real failure, not a stand-in."""
    fault = request.fault
    if fault == "nan" and step == 1:  # a diverging optimizer: the weights, then the loss, go NaN
        for group in engine.optimizer.param_groups:
            group["lr"] = float("nan")
    if fault == "crash" and rank == 0 and step == 1:
        raise RuntimeError("injected crash")
    if fault == "hang" and step == 1:
        time.sleep(10_000)
    if fault == "oom" and rank == 0 and step == 1:
        torch.empty(1 << 50, dtype=torch.uint8)  # a petabyte: the allocator refuses it
    if fault == "slow":  # time lost waiting (a sleep): wall time grows, CPU time does not
        time.sleep(request.slow_step_s)
    if fault == "spin":  # extra work: a busy loop of slow_step_s CPU seconds
        deadline = time.process_time() + request.slow_step_s
        while time.process_time() < deadline:
            pass


def build_optimizer(parameters, *, offloaded: bool, backend: str) -> torch.optim.Optimizer:
    """AdamW as a DeepSpeed user gets it. With the optimizer offloaded: DeepSpeed's CPU Adam, its
    vectorised C++ step (the ZeRO-Offload paper, Ren et al. 2021, measured it 5-6x faster than
    PyTorch's CPU Adam of its day); its op is compiled on first use, once per machine, into torch's
    extension cache and loaded from there after, before the timed steps either way. Otherwise
    torch's AdamW, fused on CUDA.
    """
    hyper = dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    if offloaded:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(parameters, adamw_mode=True, **hyper)
    return torch.optim.AdamW(parameters, fused=backend == "cuda", **hyper)


def time_after_gate(request: TrialRequest, numerics: NumericsRecord, *, rank: int, world_size: int, engine,
                    device_peak: DevicePeak, optimizer_step, device: torch.device, train_start: float,
                    early: StepTimes) -> RankOutcome:
    """The gate's verdict on `numerics`; the timed steps when it passed (`early`: the gate's own, past
    the warm-up); every rank's peak; the engine closed."""
    import torch.distributed as dist

    gated = time.time()
    diverged = (divergence(numerics, request.reference, request.point.precision, params=request.spec.param_count())
                if request.reference else None)
    step_times: list[float] = []
    cpu_times: list[float] = []
    loss_value = numerics.losses[-1] if numerics.losses else math.nan
    warmed = timed = gated
    if diverged is None:
        first_step = _warm_up(request, rank=rank, engine=engine, device_peak=device_peak,
                              optimizer_step=optimizer_step, first_step=len(numerics.losses))
        warmed = time.time()
        step_times, cpu_times, loss_value = _timed_steps(request, rank=rank, engine=engine, device_peak=device_peak,
                                                         optimizer_step=optimizer_step, first_step=first_step,
                                                         device=device, early=early, loss_value=loss_value)
        timed = time.time()
    peaks: list[tuple[int, int | None]] = [(0, None)] * world_size
    dist.all_gather_object(peaks, device_peak.figures(request.backend))
    engine.destroy()
    return RankOutcome(step_times, loss_value, [peak for peak, _ in peaks], [allocator for _, allocator in peaks],
                       train_start, numerics, diverged, tuple(cpu_times),
                       gate_s=gated - train_start, warmup_s=warmed - gated, timed_s=timed - warmed)


def _warm_up(request: TrialRequest, *, rank: int, engine, device_peak: DevicePeak, optimizer_step,
             first_step: int) -> int:
    """The warm-up steps the gate's did not already cover; the next step's index."""
    step = first_step
    for _ in range(max(0, request.measure.warmup_steps - first_step)):
        inject_fault(request, rank, step, engine)
        optimizer_step(step)
        device_peak.sample()
        step += 1
    return step


def _timed_steps(request: TrialRequest, *, rank: int, engine, device_peak: DevicePeak, optimizer_step,
                 first_step: int, device: torch.device, early: StepTimes,
                 loss_value: float) -> tuple[list[float], list[float], float]:
    """Timed steps from `first_step` until stable, after the gate's `early` ones; their wall and CPU
    seconds, and the last loss (`loss_value` when the gate's steps were enough)."""
    import torch.distributed as dist

    policy = request.measure
    step = first_step

    def timed_step(step: int) -> tuple[float, float, float]:
        """(wall seconds, CPU seconds of this process's threads, loss) of one optimizer step. CPU time
        moves far less than wall time with other jobs' load: it catches extra work on a busy host."""
        started, cpu_started = time.perf_counter(), time.process_time()
        inject_fault(request, rank, step, engine)  # a test-only slow fault is part of the step it slows
        loss_value = optimizer_step(step).item()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        device_peak.sample()
        return seconds, cpu_seconds, loss_value

    collective_device = device if request.backend == "cuda" else torch.device("cpu")
    if request.pace_socket is not None:  # an A/B conductor hands out the timed steps (engine.pacing)
        return paced_steps(request.pace_socket, rank=rank, first_step=step, timeout_s=request.timeout_s,
                           tokens_per_step=request.point.global_batch(dist.get_world_size()) * request.seq_len,
                           device=collective_device, timed_step=timed_step)
    step_times, cpu_times = list(early.wall), list(early.cpu)  # the same count on every rank
    measure_start = time.perf_counter() - sum(step_times)
    stop = torch.zeros(1, dtype=torch.int32, device=collective_device)
    while True:
        if step_times:
            if rank == 0:
                enough = (len(step_times) >= policy.min_steps
                          and relative_standard_error(step_times) < policy.target_rse)
                stop.fill_(int(enough or len(step_times) >= policy.max_steps
                                or time.perf_counter() - measure_start > policy.max_measure_s))
            dist.broadcast(stop, src=0)  # every rank stops at the same step
            if stop.item():
                return step_times, cpu_times, loss_value
        seconds, cpu_seconds, loss_value = timed_step(step)
        step_times.append(seconds)
        cpu_times.append(cpu_seconds)
        step += 1
