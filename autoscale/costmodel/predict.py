"""The cost model's one entry point: memory and step time of a point, and whether it fits."""

from __future__ import annotations

from dataclasses import dataclass, replace

from typing import Callable

from autoscale.budget import MemoryBudget
from autoscale.costmodel.memory import MemoryBreakdown, memory_breakdown
from autoscale.costmodel.params import GPU_MEMORY_ERROR, EfficiencyParams, load_params
from autoscale.costmodel.time import Placement, TimeBreakdown, time_breakdown
from autoscale.errors import UserError
from autoscale.hardware import Hardware
from autoscale.layout import check_layout
from autoscale.models.spec import ModelSpec
from autoscale.point import Point

MEMORY_ERROR = 0.10
"""The largest relative error of the predicted peak on the held-out measured CPU trials of
benchmarks/validate_memory.py (median 2.3%, max 10%). A point predicted past the margin by less
than this may still measure within it: `Prediction.borderline`. On GPUs the band is
`params.GPU_MEMORY_ERROR`, from published GPU peaks (benchmarks/validate_gpu.py)."""


@dataclass(frozen=True, kw_only=True)
class Prediction:
    memory: MemoryBreakdown
    time: TimeBreakdown
    budget: MemoryBudget  # what one rank has, and may fill
    memory_error: float = MEMORY_ERROR  # the model's largest relative memory error on this kind of device

    @property
    def fits(self) -> bool:
        return self.budget.fits(self.peak_bytes)

    @property
    def peak_bytes(self) -> int:
        return self.memory.peak_bytes

    @property
    def tokens_per_s(self) -> float:
        return self.time.tokens_per_s

    @property
    def borderline(self) -> bool:
        """Predicted past the margin, but by less than the model's memory error: only a measurement can
        say whether it fits. The tuner launches such a point only when nothing that fits is predicted
        faster (`costmodel.planner.worth_the_risk`)."""
        return not self.fits and self.peak_bytes <= (1 + self.memory_error) * self.budget.usable_bytes

    def memory_verdict(self) -> str:
        """Whether the point fits, against which figure, for messages and pruned records."""
        verdict = "fits" if self.fits else "predicted not to fit"
        verdict = f"{verdict}: peak {self.budget.against(self.peak_bytes)}"
        if self.borderline:
            verdict += ", past the margin by less than the model's memory error: only a trial can tell"
        return verdict

    def pruned_reason(self) -> str:
        return f"pruned: {self.memory_verdict()}"

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return {"memory": asdict(self.memory), "time": asdict(self.time),
                "device_bytes": self.budget.device_bytes, "usable_bytes": self.budget.usable_bytes,
                "fits": self.fits, "borderline": self.borderline,
                "tokens_per_s": self.time.tokens_per_s, "tflops_per_gpu": self.time.tflops_per_gpu,
                "mfu": self.time.mfu}


def costed_point(point: Point) -> Point:
    """The point whose memory and traffic `point` has. ZeRO-2/3 under a pipeline costs what ZeRO-1
    costs: the engine that runs it (torchtitan, `layout_targets`) keeps each stage's parameters
    gathered from forward to backward (FSDP2's reshard_after_forward is off by default when pp > 1,
    torchtitan's `parallelize`) and its gradients whole until the last micro-batch
    (`torch.distributed.pipelining` turns gradient sync and resharding after backward off before it),
    so only the optimizer states stay sharded, and each step gathers and reduces once."""
    if point.pp > 1 and point.zero_stage >= 2:
        return replace(point, zero_stage=1)
    return point


def predict(spec: ModelSpec, point: Point, hardware: Hardware, *, world_size: int, seq_len: int,
            params: EfficiencyParams | None = None) -> Prediction:
    """Predicted memory per rank and step time of `point` on `world_size` ranks of `hardware`.

    On `cpu` all ranks share one machine: each rank may use memory / world_size, and the peak
    FLOP/s and memory bandwidth are shared. `params` defaults to the calibration for the hardware
    (`load_params`).
    """
    check_layout(point, world_size=world_size, spec=spec, seq_len=seq_len)
    if seq_len <= 0 or seq_len > spec.max_seq_len:
        raise UserError(f"seq_len must be in 1..{spec.max_seq_len} for {spec.name}, got {seq_len}")
    params = params or load_params(hardware.name)
    on_cpu = hardware.name == "cpu"
    placement = Placement(ranks_per_node=world_size if on_cpu else hardware.gpus_per_node, shared_device=on_cpu)
    costed = costed_point(point)
    memory = memory_breakdown(spec, costed, world_size=world_size, seq_len=seq_len, on_cpu=on_cpu, params=params)
    time = time_breakdown(spec, costed, hardware, world_size=world_size, seq_len=seq_len, placement=placement,
                          params=params)
    return Prediction(memory=memory, time=time, budget=MemoryBudget.for_hardware(hardware, world_size),
                      memory_error=MEMORY_ERROR if on_cpu else GPU_MEMORY_ERROR)


Predictor = Callable[[Point], "Prediction | None"]
"""The cost model bound to one run: a point's prediction, or None for a point it cannot lay out."""


def point_predictor(spec: ModelSpec, hardware: Hardware, *, world_size: int, seq_len: int,
                    warm_ranks: bool = False, params: EfficiencyParams | None = None) -> Predictor:
    """`predict` bound to one run: what the tuner (and the replayed strategies) consult per point.

    `params` default to the calibration where `autoscale calibrate` has been run (`load_params`;
    `warm_ranks`: trials run in children of a warm fork server). The predictor answers None for a
    layout the model cannot place (that point is measured rather than guessed about).
    """
    params = params or load_params(hardware.name, warm_ranks=warm_ranks)

    def predict_point(point: Point) -> Prediction | None:
        try:
            return predict(spec, point, hardware, world_size=world_size, seq_len=seq_len, params=params)
        except UserError:
            return None

    return predict_point
