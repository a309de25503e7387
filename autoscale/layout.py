"""The rules that lay a point out on a world of ranks and a model, and the one way to build points.

`Point` checks what a point alone can get wrong; here live the rules that also need the world size,
the global batch or the model and hold for every engine: model-parallel degrees that divide the
ranks and the model, and the gradient accumulation that keeps the global batch fixed. What an engine
can combine is its own (`autoscale.layout_targets`): `build_point` applies one target's rules after
these. Every command reaches them through `build_point` or `check_layout`, so each rule has one
message, naming the flag or space key to change. Enumerating a space skips the points a rule refuses and counts them
by rule (`enumerate_points`).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from collections import Counter
from typing import TYPE_CHECKING, Mapping, Sequence

from autoscale.errors import RuleError, UserError
from autoscale.layout_targets import TRIAL_ENGINE, LayoutTarget
from autoscale.point import KNOB_NAMES, Point, knob_ref

if TYPE_CHECKING:
    from autoscale.models.spec import ModelSpec


def check_layout(point: Point, *, world_size: int, spec: "ModelSpec | None" = None,
                 seq_len: int | None = None) -> None:
    """Raise RuleError when `point` cannot be laid out on `world_size` ranks (of `spec` and sequences
    of `seq_len` tokens, when given)."""
    if world_size <= 0:
        raise UserError(f"the number of ranks must be positive, got {world_size} (--nproc or --gpus)")
    if world_size % point.model_parallel:
        raise RuleError("model-parallel sizes do not divide the ranks",
                        f"{world_size} ranks are not divisible by tp {point.tp} x pp {point.pp} x sp {point.sp} x "
                        f"cp {point.cp}: change {knob_ref('tp')}, {knob_ref('pp')}, {knob_ref('sp')} or "
                        f"{knob_ref('cp')}, or the ranks (--nproc or --gpus)")
    if seq_len is not None and seq_len % (point.sp * point.cp):
        raise RuleError("sp x cp does not divide the sequence",
                        f"sp {point.sp} x cp {point.cp} does not divide the sequence length {seq_len}: change "
                        f"{knob_ref('sp')}, {knob_ref('cp')} or --seq-len")
    if spec is None:
        return
    if spec.n_heads % (point.tp * point.sp):
        raise RuleError("tp x sp does not divide the heads",
                        f"tp {point.tp} x sp {point.sp} does not divide the {spec.n_heads} attention heads of "
                        f"{spec.name}: change {knob_ref('tp')} or {knob_ref('sp')}")
    if spec.n_kv_heads % point.tp:
        raise RuleError("tp does not divide the key-value heads",
                        f"tp {point.tp} does not divide the {spec.n_kv_heads} key-value heads of {spec.name} "
                        f"(grouped-query attention): change {knob_ref('tp')}")
    if spec.n_kv_heads % point.sp:
        raise RuleError("sp does not divide the key-value heads",
                        f"sp {point.sp} does not divide the {spec.n_kv_heads} key-value heads of {spec.name} "
                        f"(Ulysses gives each rank whole key-value heads): change {knob_ref('sp')}")
    if point.pp > spec.n_layers:
        raise RuleError("pp exceeds the layers",
                        f"pp {point.pp} exceeds the {spec.n_layers} layers of {spec.name}: change {knob_ref('pp')}")


def grad_accum_for(point: Point, *, global_batch: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that micro_batch x grad_accum x data-parallel = the global batch
    (`point`'s own grad_accum is ignored)."""
    data_parallel = point.data_parallel(world_size) if world_size % point.model_parallel == 0 else 0
    per_micro_step = point.micro_batch * data_parallel
    if data_parallel == 0 or global_batch % per_micro_step:
        raise RuleError("global batch not a multiple of micro-batch x data-parallel",
                        f"global batch {global_batch} is not a multiple of micro-batch "
                        f"{point.micro_batch} x data-parallel size {data_parallel}: change --global-batch "
                        f"or {knob_ref('micro_batch')}")
    return global_batch // per_micro_step


def build_point(knobs: Mapping, *, global_batch: int, world_size: int, spec: "ModelSpec | None" = None,
                target: LayoutTarget | None = TRIAL_ENGINE) -> Point:
    """The point for these knob values, its gradient accumulation derived; RuleError when a rule refuses it:
    the arithmetic's, then `target`'s (None: the arithmetic alone, as `estimate` predicts a given point)."""
    point = Point(**knobs, grad_accum=1)  # the point's own rules first: their messages are the most specific
    check_layout(point, world_size=world_size, spec=spec)
    point = replace(point, grad_accum=grad_accum_for(point, global_batch=global_batch, world_size=world_size))
    if target is not None:
        target.check(point)
    return point


def enumerate_points(choices: Mapping[str, Sequence], *, global_batch: int, world_size: int,
                     spec: "ModelSpec | None" = None,
                     target: LayoutTarget | None = TRIAL_ENGINE) -> tuple[list[Point], Counter]:
    """Every point of the product of `choices` (knob -> values; knobs left out take their defaults)
    that can be laid out and `target` runs, in product order, and how many each rule skipped."""
    names = [name for name in KNOB_NAMES if name in choices]
    points, skipped = [], Counter()
    for values in itertools.product(*(choices[name] for name in names)):
        try:
            points.append(build_point(dict(zip(names, values)), global_batch=global_batch,
                                      world_size=world_size, spec=spec, target=target))
        except RuleError as error:
            skipped[error.rule] += 1
    return points, skipped


def describe_skipped(skipped: Counter) -> str:
    """`skipped` as one line for consoles: "12 offload needs ZeRO >= 1, 4 pipeline with ZeRO-2/3"."""
    return ", ".join(f"{count} {rule}" for rule, count in skipped.most_common())


SEQUENCES_PER_RANK = 8
"""The default global batch per rank, in sequences, for every command that takes --global-batch."""

DEFAULT_SEQ_LEN = 1024
"""The default sequence length on CPUs, capped by the model's maximum: trials there take seconds."""

GPU_SEQ_LEN = 8192
"""The default sequence length on GPUs, capped by the model's maximum: the pre-training length of the
models planned for (Llama 3: 8192, Dubey et al. 2024 Sec. 3.4; Llama 2: 4096), not a long-context stage."""


def default_seq_len(spec: "ModelSpec", *, on_gpu: bool) -> tuple[int, str]:
    """The sequence length when --seq-len is not given, and why, for the console's first line."""
    cap, where = (GPU_SEQ_LEN, "GPUs") if on_gpu else (DEFAULT_SEQ_LEN, "CPU trials")
    seq_len = min(spec.max_seq_len, cap)
    return seq_len, (f"seq {seq_len}: the default on {where} ({spec.name}'s maximum {spec.max_seq_len}, at most "
                     f"{cap}); change it with --seq-len")


def resolve_seq_len(spec: "ModelSpec", seq_len: int | None, *, on_gpu: bool = False) -> int:
    """--seq-len, or the default: the same for `tune`, `estimate` and plans, so one model on one kind of
    device gives one figure."""
    if seq_len is None:
        return default_seq_len(spec, on_gpu=on_gpu)[0]
    if not 0 < seq_len <= spec.max_seq_len:
        raise UserError(f"--seq-len {seq_len} is outside 1..{spec.max_seq_len}, {spec.name}'s maximum")
    return seq_len


def resolve_global_batch(global_batch: int | None, *, world_size: int) -> int:
    """--global-batch, or `SEQUENCES_PER_RANK` sequences per rank."""
    if global_batch is not None and global_batch <= 0:
        raise UserError(f"--global-batch must be positive, got {global_batch}")
    return global_batch or SEQUENCES_PER_RANK * world_size
