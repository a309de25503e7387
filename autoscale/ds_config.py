"""The one place a `Point` becomes a DeepSpeed config, and where DeepSpeed's own parser checks it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from autoscale.errors import UserError
from autoscale.point import Point

# ZeRO bucket sizes DeepSpeed's own defaults use (5e8 elements); kept explicit so exports agree.
BUCKET_ELEMENTS = 500_000_000


def to_ds_config(point: Point, *, world_size: int, gradient_clipping: float = 1.0) -> dict:
    """A complete ds_config for `point` on `world_size` ranks.

    No "optimizer" section: the trainer passes its own (a torch AdamW in the engine), which avoids
    DeepSpeed's JIT-built ops and is what HF Trainer, Accelerate and Lightning do too.
    """
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
        # let a torch optimizer run on the offloaded partitions instead of DeepSpeedCPUAdam
        config["zero_force_ds_cpu_optimizer"] = False
    if point.pp > 1:
        config["pipeline"] = {"stages": point.pp}
    return config


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
