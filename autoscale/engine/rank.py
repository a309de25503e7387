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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import torch

from autoscale.engine.build import build_trial_model
from autoscale.engine.data import micro_batch_tokens
from autoscale.engine.memcap import apply_memory_cap, cap_note, capped, lift_memory_cap
from autoscale.engine.measure import DevicePeak, relative_standard_error, reset_peak_memory
from autoscale.engine.parallel import data_parallel_coordinates, splits_the_model, trial_ds_config
from autoscale.engine.numerics import NumericsRecord, divergence, gate_steps, loss_gap, write_record
from autoscale.engine.outcome import mentions_oom
from autoscale.engine.pacing import paced_steps
from autoscale.engine.sequence_trial import sequence_trial
from autoscale.engine.request import RANK_FAILED_EXIT_CODE, STARTED_MARKER, TrialPhases, TrialRequest

COLLECTIVE_TIMEOUT_SHARE = 0.8  # of the trial's timeout: a hung NCCL collective fails before the launcher's kill
COLLECTIVE_TIMEOUT_MARKERS = ("watchdog caught collective operation timeout",)


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


def _device(backend: str, local_rank: int) -> torch.device:
    if backend == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _inject_fault(request: TrialRequest, rank: int, step: int, engine) -> None:
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
    device = _device(request.backend, local_rank)
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
            _inject_fault(request, rank, step, engine)
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
        _inject_fault(request, rank, step, engine)
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
        _inject_fault(request, rank, step, engine)  # a test-only slow fault is part of the step it slows
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
