"""What a real trial applies today, for the knobs where that is less than the whole vocabulary.

The engine trains data-parallel (ZeRO) trials in fp32, bf16 or fp16, and tensor-parallel ones
through DeepSpeed's AutoTP (`engine.parallel`) with every ZeRO stage. Pipeline and sequence
parallelism, fp8 and the other sequence-splitting knobs are known to the cost model, plans
(`--backend model`) and `estimate`, and a space that asks a real backend for them gets them dropped
by name (`SearchSpace.for_backend`), never measured as something they are not.
"""

from autoscale.ds_config import DS_CONFIG_KNOBS

# A user's script (`autoscale tune --script`) applies only what its ds_config carries; pipeline
# stages need the script's model to be a DeepSpeed PipelineModule, which autoscale cannot know.
SCRIPT_KNOBS: tuple[str, ...] = tuple(knob for knob in DS_CONFIG_KNOBS if knob != "pp")

TRIAL_CHOICES: dict[str, tuple] = {
    "precision": ("fp32", "bf16", "fp16"),
    "tp": (1, 2, 4, 8),  # within a node: AutoTP all-reduces twice per block
    "pp": (1,),
    "sp": (1,),
    "cp": (1,),
    "vpp": (1,),
    "megatron_sp": (False,),
}
