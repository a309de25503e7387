"""Ranking points by predicted throughput, and planning a cluster the user cannot run on.

`rank_points` orders given points (the tuner's seeds and pruning); `plan_cluster` enumerates the
whole layout space for a target cluster (`--backend model`, `autoscale estimate` with flags left
out): ZeRO stage, micro-batch, precision, checkpointing, offload, tp (divisors of the GPUs per
node that divide the heads) and pp (divisors of the layers), with gradient accumulation set by
the global batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from autoscale.costmodel.params import EfficiencyParams, load_params
from autoscale.costmodel.predict import Prediction, predict
from autoscale.errors import UserError
from autoscale.hardware import Hardware
from autoscale.models.spec import ModelSpec
from autoscale.point import CHECKPOINTING, OFFLOADS, PRECISIONS, ZERO_STAGES, Point

MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)
PLANNED_KNOBS = ("zero_stage", "micro_batch", "precision", "checkpointing", "offload", "tp", "pp")


def rank_points(spec: ModelSpec, points: Iterable[Point], hardware: Hardware, *, world_size: int, seq_len: int,
                params: EfficiencyParams | None = None) -> list[tuple[Point, Prediction]]:
    """The points that fit, fastest predicted first. Points that cannot be laid out are dropped."""
    params = params or load_params(hardware.name)
    ranked = []
    for point in points:
        try:
            prediction = predict(spec, point, hardware, world_size=world_size, seq_len=seq_len, params=params)
        except UserError:
            continue
        if prediction.fits:
            ranked.append((point, prediction))
    ranked.sort(key=lambda pair: pair[1].time.tokens_per_s, reverse=True)
    return ranked


def worth_the_risk(ranked: list[tuple[Point, Prediction]]) -> list[Point]:
    """The borderline points (past the memory margin by less than the model's error) predicted faster
    than every point that fits, fastest first; `ranked` is every predicted point, fastest first.

    Fast configs sit near the memory limit, where the model's few percent of error decide: pruning
    them all would rule out the best config whenever the model errs high. Only points the model ranks
    above everything safe are worth a launch that may OOM: the tuner launches these (its opening the
    first of them) and prunes any other point predicted past the margin; a plan counts them."""
    best_fitting = next((pr.tokens_per_s for _, pr in ranked if pr.fits), 0.0)
    return [p for p, pr in ranked if pr.borderline and pr.tokens_per_s > best_fitting]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_values(spec: ModelSpec, hardware: Hardware, gpus: int, *, global_batch: int) -> dict[str, list]:
    """Every value the planner tries per knob on this cluster."""
    node = gpus if hardware.name == "cpu" else min(hardware.gpus_per_node, gpus)
    tps = [t for t in _divisors(node) if spec.n_heads % t == 0 and gpus % t == 0]
    pps = [p for p in _divisors(spec.n_layers) if gpus % p == 0]
    precisions = [p for p in PRECISIONS if p == "fp32" or hardware.peak_tflops.get(p, 0) > 0
                  or hardware.name == "cpu"]
    return {"zero_stage": list(ZERO_STAGES), "micro_batch": [m for m in MICRO_BATCHES if m <= global_batch],
            "precision": precisions, "checkpointing": list(CHECKPOINTING), "offload": list(OFFLOADS),
            "tp": tps, "pp": pps}


def enumerate_points(spec: ModelSpec, hardware: Hardware, gpus: int, *, global_batch: int,
                     fixed: Mapping[str, object] | None = None, kernels: str = "torch") -> list[Point]:
    """All valid points whose global batch is exactly `global_batch`, with `fixed` knobs held."""
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(PLANNED_KNOBS)
    if unknown:
        raise UserError(f"cannot fix {', '.join(sorted(unknown))}: the planner knows {', '.join(PLANNED_KNOBS)}")
    values = candidate_values(spec, hardware, gpus, global_batch=global_batch)
    for name, value in fixed.items():
        values[name] = [value]
    points = []
    for zero, micro, precision, checkpointing, offload, tp, pp in itertools.product(
            *(values[name] for name in PLANNED_KNOBS)):
        if gpus % (tp * pp) or (offload != "none" and zero == 0) or (pp > 1 and zero >= 2):
            continue
        dp = gpus // (tp * pp)
        if global_batch % (micro * dp):
            continue
        points.append(Point(zero_stage=zero, micro_batch=micro, grad_accum=global_batch // (micro * dp),
                            precision=precision, checkpointing=checkpointing, offload=offload,
                            kernels=kernels, tp=tp, pp=pp))
    return points


def plan_cluster(spec: ModelSpec, hardware: Hardware, gpus: int, *, global_batch: int, seq_len: int,
                 fixed: Mapping[str, object] | None = None, params: EfficiencyParams | None = None,
                 kernels: str = "torch") -> list[tuple[Point, Prediction]]:
    """Every layout of `global_batch` sequences on `gpus` devices that fits, fastest first.

    Raises UserError when nothing fits, naming the smallest predicted peak against the limit.
    """
    points = enumerate_points(spec, hardware, gpus, global_batch=global_batch, fixed=fixed, kernels=kernels)
    if not points:
        raise UserError(f"no layout of global batch {global_batch} on {gpus} devices matches the fixed flags "
                        "(the global batch must be a multiple of micro-batch x data-parallel size)")
    ranked = rank_points(spec, points, hardware, world_size=gpus, seq_len=seq_len, params=params)
    if not ranked:
        params = params or load_params(hardware.name)
        smallest = min((predict(spec, p, hardware, world_size=gpus, seq_len=seq_len, params=params)
                        for p in points[:2000] if _lays_out(spec, p, gpus)),
                       key=lambda prediction: prediction.memory.peak_bytes, default=None)
        detail = (f": the smallest predicted peak is {smallest.memory.peak_bytes / 2**30:.1f} GiB per rank "
                  f"against {smallest.memory_limit_bytes / 2**30:.1f} GiB") if smallest else ""
        raise UserError(f"no configuration of {spec.name} fits on {gpus} x {hardware.name}{detail}")
    return ranked


def _lays_out(spec: ModelSpec, point: Point, gpus: int) -> bool:
    from autoscale.costmodel.predict import check_layout

    try:
        check_layout(spec, point, world_size=gpus)
    except UserError:
        return False
    return True
