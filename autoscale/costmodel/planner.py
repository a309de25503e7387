"""Ranking points by predicted throughput, and planning a cluster the user cannot run on.

`rank_predictions` orders given points (the tuner's opening and pruning); `plan_cluster` enumerates the
whole layout space for a target cluster (`--backend model`, `autoscale estimate` with knobs left
open): every knob of `Point`, tp over the divisors of the GPUs per node, pp over the divisors of the
layers, with gradient accumulation set by the global batch and the layout rules of
`autoscale.layout` (what they skip is counted by rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from autoscale.costmodel.params import EfficiencyParams, load_params
from autoscale.costmodel.predict import Prediction, Predictor, point_predictor, predict
from autoscale.errors import UserError
from autoscale.hardware import Hardware
from autoscale.layout import describe_skipped, enumerate_points
from autoscale.layout_targets import TRIAL_ENGINE, LayoutTarget
from autoscale.models.spec import ModelSpec
from autoscale.point import KNOBS, Point, knob_ref

MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def rank_predictions(points: Iterable[Point], predictor: Predictor) -> list[tuple[Point, Prediction]]:
    """Every point the model can lay out with its prediction, fastest predicted first."""
    predicted = [(p, pr) for p in points if (pr := predictor(p)) is not None]
    return sorted(predicted, key=lambda pair: pair[1].tokens_per_s, reverse=True)


def rank_points(spec: ModelSpec, points: Iterable[Point], hardware: Hardware, *, world_size: int, seq_len: int,
                params: EfficiencyParams | None = None) -> list[tuple[Point, Prediction]]:
    """The points that fit, fastest predicted first. Points that cannot be laid out are dropped."""
    predictor = point_predictor(spec, hardware, world_size=world_size, seq_len=seq_len, params=params)
    return [(p, pr) for p, pr in rank_predictions(points, predictor) if pr.fits]


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


VPP_CANDIDATES = (1, 2, 4)
CP_CANDIDATES = (1, 2, 4, 8)
SEQUENCE_SPLITTING = ("sp", "cp")  # tried only when nothing fits without them (`plan_cluster`)

# a point that sets each knob off its default, for asking a target whether it sets that knob at all
_PROBES = {"sp": {"sp": 2}, "cp": {"cp": 2}, "vpp": {"pp": 2, "vpp": 2, "grad_accum": 4},
           "megatron_sp": {"tp": 2, "megatron_sp": True}}


def target_sets(target: LayoutTarget | None, knob: str) -> bool:
    """Whether `target` (None: any engine) trains some point with `knob` off its default, at some ZeRO stage."""
    return target is None or any(target.refusal(Point(**_PROBES[knob], zero_stage=stage)) is None
                                 for stage in (0, 1, 2, 3))


def candidate_values(spec: ModelSpec, hardware: Hardware, gpus: int, *, global_batch: int,
                     target: LayoutTarget | None = TRIAL_ENGINE) -> dict[str, list]:
    """Every value the planner tries per knob on this cluster: a knob's own choices, the micro-batches
    up to the global batch, the model-parallel degrees the cluster and the model allow, the precisions
    the hardware has, torch kernels (a kernel set's speed is for a trial to measure) and the model's own
    attention core (another is the model's implementation, not a training configuration); the
    interleaved schedule, Megatron sequence parallelism and sequence splitting where `target` runs them."""
    node = gpus if hardware.name == "cpu" else min(hardware.gpus_per_node, gpus)
    values = {k.name: list(k.choices) if k.choices is not None else [k.default] for k in KNOBS}
    values.update(
        micro_batch=[m for m in MICRO_BATCHES if m <= global_batch],
        tp=[t for t in _divisors(node) if spec.n_heads % t == 0 and gpus % t == 0],
        pp=[p for p in _divisors(spec.n_layers) if gpus % p == 0],
        precision=[p for p in values["precision"] if p == "fp32" or hardware.peak_tflops.get(p, 0) > 0
                   or hardware.name == "cpu"],
        kernels=["torch"], attention=["model"],
        sp=[s for s in _divisors(node) if spec.n_kv_heads % s == 0 and gpus % s == 0] if target_sets(target, "sp") else [1],
        cp=[c for c in CP_CANDIDATES if gpus % c == 0] if target_sets(target, "cp") else [1],
        vpp=list(VPP_CANDIDATES) if target_sets(target, "vpp") else [1],
        megatron_sp=[False, True] if target_sets(target, "megatron_sp") else [False])
    return values


@dataclass(frozen=True)
class ClusterPlan:
    ranked: list[tuple[Point, Prediction]]  # every point laid out, fastest predicted first
    skipped: Counter  # points the layout rules refused, by rule

    @property
    def fitting(self) -> list[tuple[Point, Prediction]]:
        return [(p, pr) for p, pr in self.ranked if pr.fits]


def plan_cluster(spec: ModelSpec, hardware: Hardware, gpus: int, *, global_batch: int, seq_len: int,
                 fixed: Mapping[str, object] | None = None, params: EfficiencyParams | None = None,
                 target: LayoutTarget | None = TRIAL_ENGINE, choices: Mapping[str, list] | None = None) -> ClusterPlan:
    """Every layout of `global_batch` sequences on `gpus` devices with the `fixed` knobs held that
    `target` runs, predicted. `choices` (knob -> values; default `candidate_values`) is what is tried.
    Sequences are split (sp, cp) only when nothing fits whole: splitting costs communication, and a
    plan that needs none should not pay it.

    Raises UserError only when no point can be laid out at all, naming the rules that refused them.
    """
    fixed = dict(fixed or {})
    values = dict(choices or candidate_values(spec, hardware, gpus, global_batch=global_batch, target=target))
    for name, value in fixed.items():
        values[name] = [value]
    whole = {**values, **{knob: [1] for knob in SEQUENCE_SPLITTING if knob not in fixed and 1 in values[knob]}}
    params = params or load_params(hardware.name)

    def ranked_and_skipped(choices: Mapping[str, list]) -> tuple[list, Counter]:
        points, skipped = enumerate_points(choices, global_batch=global_batch, world_size=gpus, spec=spec,
                                           target=target)
        ranked = rank_predictions(points, point_predictor(spec, hardware, world_size=gpus, seq_len=seq_len,
                                                          params=params))
        return ranked, skipped

    ranked, skipped = ranked_and_skipped(whole)
    if not any(prediction.fits for _, prediction in ranked) and whole != values:
        ranked, skipped = ranked_and_skipped(values)
    if not ranked:
        given = ", ".join(f"{knob_ref(k)} {v}" for k, v in fixed.items()) or "no fixed knob"
        on = f" that {target.engine} runs" if target is not None else ""
        raise UserError(f"no layout of global batch {global_batch} on {gpus} devices with {given}{on} "
                        f"(skipped: {describe_skipped(skipped)}; another engine may run it: --target)")
    return ClusterPlan(ranked=ranked, skipped=skipped)
