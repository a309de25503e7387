"""The one place a `Point` becomes a DeepSpeed config, and where DeepSpeed's own parser checks it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Mapping

from autoscale.errors import UserError
from autoscale.point import Point, knob_ref

# ZeRO bucket sizes DeepSpeed's own defaults use (5e8 elements); kept explicit so exports agree.
BUCKET_ELEMENTS = 500_000_000


def unexpressed(point: Point) -> str | None:
    """What of `point` a DeepSpeed config cannot carry, or None. The cost model predicts such points
    (published runs use them), but a ds_config written for them would silently train something else."""
    if point.precision == "fp8":
        return f"{knob_ref('precision')} fp8: DeepSpeed's config has no fp8 training (Transformer Engine is the user's model code)"
    if point.megatron_sp:
        return f"{knob_ref('megatron_sp')}: DeepSpeed has no Megatron sequence parallelism"
    if point.cp > 1:
        return f"{knob_ref('cp')} {point.cp}: DeepSpeed has no context (ring-attention) parallelism"
    if point.vpp > 1:
        return f"{knob_ref('vpp')} {point.vpp}: DeepSpeed's pipeline engine has no interleaved schedule"
    return None


def to_ds_config(point: Point, *, world_size: int, gradient_clipping: float = 1.0) -> dict:
    """A complete ds_config for `point` on `world_size` ranks; UserError for what it cannot carry.

    No "optimizer" section: the trainer passes its own, as HF Trainer, Accelerate and Lightning do.
    The engine passes what DeepSpeed would build (`engine.step_loop.build_optimizer`: DeepSpeed's CPU Adam
    when the optimizer is offloaded, torch's AdamW otherwise).
    """
    refusal = unexpressed(point)
    if refusal is not None:
        raise UserError(f"no ds_config for {point.short()}: {refusal}")
    zero: dict = {"stage": point.zero_stage}
    if point.zero_stage >= 1:
        zero.update(contiguous_gradients=True, overlap_comm=point.zero_stage >= 2,
                    reduce_bucket_size=BUCKET_ELEMENTS)
    if point.zero_stage == 2:
        zero.update(allgather_bucket_size=BUCKET_ELEMENTS)
    if point.offload != "none":
        zero["offload_optimizer"] = {"device": point.offload, "pin_memory": False}
    config: dict = {
        "train_batch_size": point.global_batch(world_size),
        "train_micro_batch_size_per_gpu": point.micro_batch,
        "gradient_accumulation_steps": point.grad_accum,
        "gradient_clipping": gradient_clipping,
        "zero_optimization": zero,
        "bf16": {"enabled": point.precision == "bf16"},
        "fp16": {"enabled": point.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }
    if point.offload != "none":
        # a trainer's own torch optimizer may run on the offloaded partitions (the engine's is DeepSpeed's CPU Adam)
        config["zero_force_ds_cpu_optimizer"] = False
    if point.pp > 1:
        # documents the layout: DeepSpeed 0.19.8 takes the stage count from the model's PipelineModule
        config["pipeline"] = {"stages": point.pp}
    if point.tp > 1:
        # DeepSpeed's AutoTP training. Which linears it shards is the model's to say (a
        # "partition_config", or "preset_model": "llama" for Hugging Face's names); DeepSpeed 0.19.8
        # checks train_batch_size against every rank, TP ranks too, so a trainer drops it (engine.parallel)
        config["tensor_parallel"] = {"autotp_size": point.tp}
    if point.sp > 1:
        # DeepSpeed-Ulysses: the size only; the groups are the trainer's mpu (parallel_state_sp) and
        # the attention the model's (DistributedAttention), as in engine.sequence_trial
        config["sequence_parallel_size"] = point.sp
    return config


DS_CONFIG_KNOBS = ("zero_stage", "micro_batch", "grad_accum", "precision", "offload", "tp", "pp", "sp")
"""The fields of `Point` a ds_config holds; the others (checkpointing, kernels, attention) live in the model."""


def from_ds_config(config: dict, *, model_knobs: Mapping | None = None, origin: str = "ds_config"
                   ) -> tuple[Point, int | None]:
    """The inverse of `to_ds_config`: the Point a ds_config describes and its world size (None without
    train_batch_size). Knobs a ds_config cannot hold come from `model_knobs`, else their defaults,
    which is what the config ran with if autoscale did not write it. Settings outside the Point's
    knobs (parameter offload, NVMe, "auto" values) are refused rather than dropped: a config
    rebuilt from the Point would lose them."""
    model_knobs = dict(model_knobs or {})
    clash = sorted(set(model_knobs) & set(DS_CONFIG_KNOBS))
    if clash:
        raise UserError(f"{origin}: {', '.join(clash)} come from the ds_config; give them there, not beside it")
    zero = config.get("zero_optimization") or {}
    keys = {"zero_stage": ("zero_optimization.stage", zero.get("stage", 0)),
            "micro_batch": ("train_micro_batch_size_per_gpu", config.get("train_micro_batch_size_per_gpu")),
            "grad_accum": ("gradient_accumulation_steps", config.get("gradient_accumulation_steps", 1)),
            "tp": ("tensor_parallel.autotp_size", (config.get("tensor_parallel") or {}).get("autotp_size", 1)),
            "pp": ("pipeline.stages", (config.get("pipeline") or {}).get("stages", 1)),
            "sp": ("sequence_parallel_size", config.get("sequence_parallel_size", 1))}
    for name, (key, value) in keys.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{origin}: ds_config {key} needs an integer, found {value!r} (\"auto\" is for "
                            f"trainers; autoscale needs the concrete values of {knob_ref(name)})")
    values = {name: value for name, (_, value) in keys.items()}
    offload = (zero.get("offload_optimizer") or {}).get("device", "none")
    if (zero.get("offload_param") or {}).get("device", "none") != "none":
        raise UserError(f"{origin}: zero_optimization.offload_param is not an autoscale knob; refusing rather "
                        "than dropping it")
    point = Point(**values, precision=_precision(config, origin), offload=offload, **model_knobs)
    total = config.get("train_batch_size")
    if total is None:
        return point, None
    per_replica = point.micro_batch * point.grad_accum
    if not isinstance(total, int) or total % per_replica:
        raise UserError(f"{origin}: train_batch_size {total!r} is not a multiple of micro-batch "
                        f"{point.micro_batch} x accumulation {point.grad_accum}")
    return point, total // per_replica * point.model_parallel


def _precision(config: dict, origin: str) -> str:
    for precision, names in (("bf16", ("bf16", "bfloat16")), ("fp16", ("fp16",))):
        for name in names:
            enabled = (config.get(name) or {}).get("enabled")
            if enabled == "auto":
                raise UserError(f"{origin}: {name}.enabled is \"auto\": autoscale needs a concrete precision")
            if enabled:
                return precision
    return "fp32"


def check_with_deepspeed(config: dict) -> None:
    """Parse `config` with DeepSpeed's own `DeepSpeedConfig`; raise UserError if it refuses.

    Outside a process group DeepSpeed assumes world size 1, so the batch-size triple is checked
    here and the rest by DeepSpeed on a copy without `train_batch_size` (which it then derives).
    """
    from deepspeed.runtime.config import DeepSpeedConfig

    micro, accum, total = (config["train_micro_batch_size_per_gpu"],
                           config["gradient_accumulation_steps"], config["train_batch_size"])
    if total % (micro * accum):
        raise UserError(f"train_batch_size {total} is not a multiple of micro-batch {micro} x accumulation {accum}")
    single_rank = copy.deepcopy(config)
    single_rank.pop("train_batch_size")
    try:
        DeepSpeedConfig(single_rank)
    except Exception as error:  # DeepSpeed raises assorted types for a bad config
        raise UserError(f"DeepSpeed rejects the config: {error}") from None


def write_ds_config(config: dict, path: Path) -> None:
    check_with_deepspeed(config)
    path.write_text(json.dumps(config, indent=2) + "\n")
