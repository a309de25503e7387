"""What a trial adds to a ds_config and reads back from DeepSpeed for model-parallel points.

`to_ds_config` carries the knob (`tensor_parallel.autotp_size`); the layer specs that say how to
shard are the model's (`models.gpt.tensor_parallel_layer_specs`; for a Hugging Face model,
DeepSpeed's preset for its architecture, `models.hf_model.AUTOTP_PRESETS`) and join the config here, just before `deepspeed.initialize`. DeepSpeed 0.19.8 under AutoTP checks an explicit
`train_batch_size` against micro-batch x accumulation x the whole world, TP ranks included, so a
tensor-parallel trial leaves it out and DeepSpeed derives it.
"""

from __future__ import annotations

from autoscale.models.spec import ModelSpec
from autoscale.point import Point


def trial_ds_config(config: dict, point: Point, spec: ModelSpec, hf_config: dict | None = None) -> dict:
    """`config` as DeepSpeed must see it to train `point` on our model, or on the Hugging Face model
    of `hf_config` (`--impl transformers`), whose linears one of DeepSpeed's AutoTP presets names."""
    if point.tp == 1:
        return config
    from autoscale.models.gpt import tensor_parallel_layer_specs
    from autoscale.models.hf_model import AUTOTP_PRESETS

    sharding = ({"preset_model": AUTOTP_PRESETS[hf_config["model_type"]]} if hf_config is not None else
                {"partition_config": {"use_default_specs": False,
                                      "layer_specs": tensor_parallel_layer_specs(spec, point.tp)}})
    tensor_parallel = {**config.get("tensor_parallel", {}), "autotp_size": point.tp, **sharding}
    return {key: value for key, value in {**config, "tensor_parallel": tensor_parallel}.items()
            if key != "train_batch_size"}


def data_parallel_coordinates(engine, *, rank: int, world_size: int, sp: int = 1) -> tuple[int, int]:
    """(this rank's data-parallel rank, the data-parallel size): ranks of one tensor- or
    sequence-parallel group share a replica and so must train the same batch (under AutoTP DeepSpeed
    asserts it on the first forward). DeepSpeed's Ulysses groups (`parallel_state_sp`) are runs of
    `sp` consecutive ranks, and its mpu has no data-parallel group to ask."""
    mpu = engine.mpu
    if mpu is None or hasattr(mpu, "initialize_sequence_parallel"):
        return rank // sp, world_size // sp
    return mpu.get_data_parallel_rank(), mpu.get_data_parallel_world_size()


def splits_the_model(engine) -> bool:
    """True when a rank's parameters are shards of the model's, so their norm is not the model's
    (sequence parallelism keeps whole parameters)."""
    tensor_parallel_size = getattr(engine.mpu, "get_tensor_model_parallel_world_size", None)
    return tensor_parallel_size is not None and tensor_parallel_size() > 1
