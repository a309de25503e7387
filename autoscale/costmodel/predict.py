"""The cost model's one entry point: memory and step time of a point, and whether it fits."""

from __future__ import annotations

from dataclasses import dataclass

from autoscale.costmodel.memory import MemoryBreakdown, memory_breakdown
from autoscale.costmodel.params import EfficiencyParams, load_params
from autoscale.costmodel.time import Placement, TimeBreakdown, time_breakdown
from autoscale.errors import UserError
from autoscale.hardware import Hardware
from autoscale.models.spec import ModelSpec
from autoscale.point import Point

MEMORY_MARGIN = 0.90
"""A point fits when its predicted peak is within this fraction of the rank's memory: the model's
error on measured trials is a few percent, and an OOM costs a whole trial."""

MEMORY_ERROR = 0.10
"""The largest relative error of the predicted peak on the held-out measured CPU trials of
benchmarks/validate_memory.py (median 2.3%, max 10%). A point predicted past the margin by less
than this may still measure within it: `Prediction.borderline`."""


@dataclass(frozen=True, kw_only=True)
class Prediction:
    memory: MemoryBreakdown
    time: TimeBreakdown
    memory_limit_bytes: int  # what one rank may use
    fits: bool

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
        return not self.fits and self.peak_bytes <= MEMORY_MARGIN * (1 + MEMORY_ERROR) * self.memory_limit_bytes

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return {"memory": asdict(self.memory), "time": asdict(self.time),
                "memory_limit_bytes": self.memory_limit_bytes, "fits": self.fits,
                "tokens_per_s": self.time.tokens_per_s, "tflops_per_gpu": self.time.tflops_per_gpu,
                "mfu": self.time.mfu}


def check_layout(spec: ModelSpec, point: Point, *, world_size: int) -> None:
    """Raise UserError when the point cannot be laid out on world_size ranks."""
    if world_size <= 0:
        raise UserError(f"world size must be positive, got {world_size}")
    if world_size % (point.tp * point.pp):
        raise UserError(f"{world_size} ranks are not divisible by tp {point.tp} x pp {point.pp}")
    if spec.n_heads % point.tp:
        raise UserError(f"tp {point.tp} does not divide the {spec.n_heads} attention heads of {spec.name}")
    if point.pp > spec.n_layers:
        raise UserError(f"pp {point.pp} exceeds the {spec.n_layers} layers of {spec.name}")
    if point.pp > 1 and point.zero_stage >= 2:
        raise UserError("DeepSpeed's pipeline engine supports ZeRO stage 0 or 1 only; use --zero 0 or 1 with --pp")


def predict(spec: ModelSpec, point: Point, hardware: Hardware, *, world_size: int, seq_len: int,
            params: EfficiencyParams | None = None) -> Prediction:
    """Predicted memory per rank and step time of `point` on `world_size` ranks of `hardware`.

    On `cpu` all ranks share one machine: each rank may use memory / world_size, and the peak
    FLOP/s and memory bandwidth are shared. `params` defaults to the calibration for the hardware
    (`load_params`).
    """
    check_layout(spec, point, world_size=world_size)
    sequence_ranks = point.sp * point.cp
    if world_size % (point.tp * point.pp * sequence_ranks):
        raise UserError(f"{world_size} ranks are not divisible by tp {point.tp} x pp {point.pp} x "
                        f"sp {point.sp} x cp {point.cp}")
    if spec.n_heads % (point.tp * point.sp):
        raise UserError(f"tp {point.tp} x sp {point.sp} does not divide the {spec.n_heads} attention heads of {spec.name}")
    if seq_len % sequence_ranks:
        raise UserError(f"sp {point.sp} x cp {point.cp} does not divide the sequence length {seq_len}")
    if seq_len <= 0 or seq_len > spec.max_seq_len:
        raise UserError(f"seq_len must be in 1..{spec.max_seq_len} for {spec.name}, got {seq_len}")
    params = params or load_params(hardware.name)
    on_cpu = hardware.name == "cpu"
    placement = Placement(ranks_per_node=world_size if on_cpu else hardware.gpus_per_node, shared_device=on_cpu)
    memory = memory_breakdown(spec, point, world_size=world_size, seq_len=seq_len, on_cpu=on_cpu, params=params)
    time = time_breakdown(spec, point, hardware, world_size=world_size, seq_len=seq_len, placement=placement,
                          params=params)
    limit = hardware.memory_bytes // world_size if on_cpu else hardware.memory_bytes
    return Prediction(memory=memory, time=time, memory_limit_bytes=limit,
                      fits=memory.peak_bytes <= MEMORY_MARGIN * limit)


def point_predictor(spec: ModelSpec, hardware: Hardware, *, world_size: int, seq_len: int,
                    warm_ranks: bool = False):
    """`predict` bound to one run: what the tuner (and the replayed strategies) consult per point.

    Calibrated where `autoscale calibrate` has been run; None for a layout the model cannot place
    (that point is measured rather than guessed about). `warm_ranks`: trials run in children of a
    warm fork server (`load_params`).
    """
    params = load_params(hardware.name, warm_ranks=warm_ranks)

    def predict_point(point: Point) -> Prediction | None:
        try:
            return predict(spec, point, hardware, world_size=world_size, seq_len=seq_len, params=params)
        except UserError:
            return None

    return predict_point
