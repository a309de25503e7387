"""What one trial is asked to do, and what it reports back: plain data, JSON on the wire.

The parent process writes a `TrialRequest` as JSON for the rank processes; rank 0 writes the
`TrialResult`. Both are frozen dataclasses so the tuner, the bench runner and the tests share them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from autoscale.engine.numerics import NumericsRecord
from autoscale.models.spec import ModelSpec
from autoscale.point import Point, baseline_point
from autoscale.workload import ScriptWorkload

BACKENDS = ("cpu", "cuda")
FAULTS = ("crash", "hang", "nan", "oom", "slow", "spin", "stale_batch",  # test-only fault injection, see engine.step_loop
          "sp_without_mpu", "sp_wrong_loss_scale")  # and engine.sequence_trial
STARTED_MARKER = "training-started"  # rank 0 writes it into the workdir before its first step
RANK_FAILED_EXIT_CODE = 3  # a rank's exit status after it wrote its failure to rank<r>.error.json


@dataclass(frozen=True, kw_only=True)
class MeasurePolicy:
    """When to stop timing: once the relative standard error of the step time is below
    `target_rse` (after `min_steps`), or at `max_steps`, or after `max_measure_s` seconds."""

    warmup_steps: int = 2
    min_steps: int = 3
    max_steps: int = 20
    target_rse: float = 0.02
    max_measure_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
class TrialRequest:
    spec: ModelSpec
    point: Point
    seq_len: int
    backend: str = "cpu"
    nproc: int = 2
    workdir: Path = Path(".")
    timeout_s: float = 300.0
    measure: MeasurePolicy = field(default_factory=MeasurePolicy)
    seed: int = 1234
    impl: str = "own"  # what is trained: autoscale's own model, or "transformers" (`models.hf_model`)
    hf_config: dict | None = None  # impl "transformers": the model's config.json, as read
    ds_config: dict | None = None  # a given config instead of the point's (bench, emitted-config checks)
    reference: NumericsRecord | None = None  # the study's reference run: the gate every trial must pass
    gate: bool = True  # False: a config that passed the gate, measured again (confirmation): no gate steps
    memory_cap_bytes: int | None = None  # CPU: what each rank may add before its allocations fail (engine.memcap)
    fault: str | None = None  # test-only: one of FAULTS
    slow_step_s: float = 0.0  # test-only: extra sleep (fault="slow") or busy CPU time (fault="spin") per step
    pace_socket: str | None = None  # A/B bench: a conductor's socket hands out the timed steps (engine.pacing)
    script: ScriptWorkload | None = None  # the user's script trains instead of autoscale's loop (engine.script)

    def to_json(self) -> str:
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "TrialRequest":
        data = json.loads(text)
        data["spec"] = ModelSpec(**data["spec"])
        data["point"] = Point(**data["point"])
        data["measure"] = MeasurePolicy(**data["measure"])
        data["workdir"] = Path(data["workdir"])
        if data.get("reference") is not None:
            data["reference"] = NumericsRecord.from_dict(data["reference"])
        if data.get("script") is not None:
            data["script"] = ScriptWorkload.from_dict(data["script"])
        return cls(**data)


def reference_request(*, spec: ModelSpec, seq_len: int, global_batch: int, nproc: int, backend: str,
                      workdir: Path, timeout_s: float, seed: int, impl: str = "own",
                      hf_config: dict | None = None, memory_cap_bytes: int | None = None,
                      measure: MeasurePolicy | None = None) -> TrialRequest:
    """The reference run as a trial: the baseline point (fp32, ZeRO-0, micro-batch 1, no model
    parallelism), the gate's steps, then `measure`'s timed steps (a study's, whose baseline trial
    it then is) or, without one, a single timed step nobody reads."""
    return TrialRequest(spec=spec, point=baseline_point(global_batch, nproc), seq_len=seq_len, backend=backend,
                        nproc=nproc, workdir=workdir, timeout_s=timeout_s, seed=seed, impl=impl, hf_config=hf_config,
                        memory_cap_bytes=memory_cap_bytes,
                        measure=measure or MeasurePolicy(warmup_steps=0, min_steps=1, max_steps=1))


@dataclass(frozen=True, kw_only=True)
class TrialPhases:
    """Where a trial's seconds went, by rank 0's clock, from the launch to the last timed step; the
    launcher's `wall_s` less their sum is the finish (peaks gathered, engine closed, result written,
    processes gone). Recorded so a study's breakdown (`autoscale.timing`) comes from the trials themselves."""

    start_s: float  # launch to the process group joined: process start or fork, imports, rendezvous
    build_s: float  # the model built and handed to deepspeed.initialize
    gate_s: float  # the numerics gate's steps: the warm-up's first, and past it the first timed steps
    warmup_s: float  # warm-up steps beyond the gate's
    timed_s: float  # the timed steps after the gate's

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrialPhases | None":
        return cls(**data) if data else None

    def total_s(self) -> float:
        return self.start_s + self.build_s + self.gate_s + self.warmup_s + self.timed_s


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    status: str  # "ok" or "failed"
    reason: str = ""  # empty when ok; else "<kind>: detail" with kind oom|timeout|crash|nan|diverged
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    tflops_per_device: float | None = None
    mfu: float | None = None
    peak_bytes: int | None = None  # largest over ranks; the figure held against the memory limit
    peak_bytes_per_rank: tuple[int, ...] = ()
    peak_allocator_bytes: int | None = None  # CUDA: the caching allocator's peak reserved, largest over ranks
    loss: float | None = None
    steps: int = 0  # timed optimizer steps
    step_s: float | None = None  # median optimizer-step time
    step_cpu_s: float | None = None  # median CPU seconds of rank 0's process per timed step, all its threads
    step_rse: float | None = None  # relative standard error of the mean step time
    wall_s: float = 0.0  # the whole trial, launch to cleanup
    launch_s: float | None = None  # launch to the first training step
    loss_gap: float | None = None  # largest relative gap of the first steps' losses to the reference run's
    grad_norm0: float | None = None  # global gradient norm of the first optimizer step
    phases: TrialPhases | None = None  # where the trial's time went (not a trials.csv column)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failure_kind(self) -> str:
        return self.reason.split(":", 1)[0] if self.reason else ""

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrialResult":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["peak_bytes_per_rank"] = tuple(values.get("peak_bytes_per_rank", ()))
        values["phases"] = TrialPhases.from_dict(values.get("phases"))
        return cls(**values)

    @classmethod
    def failed(cls, reason: str, *, wall_s: float = 0.0) -> "TrialResult":
        return cls(status="failed", reason=reason, wall_s=wall_s)
