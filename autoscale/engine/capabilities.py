"""What a real trial applies today, for the knobs where that is less than the whole vocabulary.

The engine trains data-parallel (ZeRO) trials in fp32, bf16 or fp16, tensor-parallel ones
through DeepSpeed's AutoTP (`engine.parallel`) and sequence-parallel ones through DeepSpeed-Ulysses
(`engine.sequence_trial`), each with every ZeRO stage, and pipeline-parallel ones through DeepSpeed's
pipeline engine (`engine.pipeline_trial`) at ZeRO-1 without tp (`layout_targets.TRIAL_ENGINE`).
fp8 and the other sequence-splitting knobs are known to the cost model, plans
(`--backend model`) and `estimate`, and a space that asks a real backend for them gets them dropped
by name (`SearchSpace.for_backend`), never measured as something they are not.
"""

import importlib.util

from autoscale.ds_config import DS_CONFIG_KNOBS

# A user's script (`autoscale tune --script`) applies only what its ds_config carries, and of that not
# the model-parallel degrees: each needs the script's model built for it (a PipelineModule for pp,
# DistributedAttention and a sequence-parallel mpu for sp, partition specs for its linears for tp),
# which autoscale cannot know.
SCRIPT_KNOBS: tuple[str, ...] = tuple(knob for knob in DS_CONFIG_KNOBS if knob not in ("tp", "pp", "sp"))

TRIAL_CHOICES: dict[str, tuple] = {
    "checkpointing": ("none", "selective", "full"),  # no per-operator policy (torchtitan's "op")
    "precision": ("fp32", "bf16", "fp16"),
    "tp": (1, 2, 4, 8),  # within a node: AutoTP all-reduces twice per block
    "pp": (1, 2, 4),  # DeepSpeed's pipeline engine (engine.pipeline_trial)
    "sp": (1, 2, 4),  # DeepSpeed-Ulysses (engine.sequence_trial)
    "cp": (1,),
    "vpp": (1,),
    "megatron_sp": (False,),
}


def workload_choices(impl: str, hf_config: dict | None, backend: str) -> dict[str, tuple]:
    """What trials of a workload apply beyond `TRIAL_CHOICES`. Our own model runs its one attention
    core. A Hugging Face model (`--impl transformers`, `models.hf_model`) runs the attention
    implementations transformers offers here (flash_attention_2 on CUDA with flash-attn installed),
    recomputes whole layers or nothing, is tensor-parallel only where DeepSpeed has an AutoTP preset
    for its architecture, takes kernel sets other than torch only where its architecture has module
    swaps, and is neither pipelined nor sequence-split (both are built into our model's layers:
    `models.pipeline`, `models.sequence_parallel`)."""
    if impl != "transformers":
        return {"attention": ("model",)}
    from autoscale.models.hf_model import AUTOTP_PRESETS, CHECKPOINTING, patchable

    hf_config = hf_config or {}
    flash = ("flash",) if backend == "cuda" and importlib.util.find_spec("flash_attn") else ()
    choices: dict[str, tuple] = {"attention": ("model", "sdpa", "eager", *flash), "checkpointing": CHECKPOINTING,
                                 "pp": (1,), "sp": (1,)}
    if hf_config.get("model_type") not in AUTOTP_PRESETS:
        choices["tp"] = (1,)
    if not patchable(hf_config):
        choices["kernels"] = ("torch",)
    return choices
