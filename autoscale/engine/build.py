"""The model a trial trains, built as a DeepSpeed user builds it for the trial's ZeRO stage.

At ZeRO-3 the model is constructed inside `deepspeed.zero.Init` with the trial's own ds_config, so
each module's parameters are partitioned over the ranks as soon as the module exists and no rank
ever holds the whole model: a model whose shards fit but whose whole copy does not can still start.
Below ZeRO-3 every rank builds the whole model and DeepSpeed partitions what its stage shards
later. The initialisation is the model's own (`models.gpt.Transformer._init_weights`): zero.Init's
`Module.apply` gathers each module around it, and its values depend only on the seed and the
parameter's name, so both builds hold the same weights and the numerics gate compares like with like.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch.nn as nn

from autoscale.engine.request import TrialRequest
from autoscale.models.sequence_parallel import WHOLE_SEQUENCE, SequenceSplit


def build_trial_model(request: TrialRequest, ds_config: dict, sequence: SequenceSplit = WHOLE_SEQUENCE) -> nn.Module:
    """The trial's model on this rank: partitioned from construction at ZeRO-3, whole below; under
    sequence parallelism its attention works on this rank's slice of each sequence (`sequence`).
    A Hugging Face model (`--impl transformers`) is built whole at every stage: transformers
    initialises its own weights, outside what `_init_weights` guarantees under zero.Init."""
    import deepspeed

    from autoscale.models.gpt import build_model

    point = request.point
    if request.impl == "transformers":
        from autoscale.models.hf_model import build_hf_model

        return build_hf_model(request.hf_config, kernels=point.kernels, checkpointing=point.checkpointing,
                              attention=point.attention_for(request.spec))
    partitioned = deepspeed.zero.Init(config_dict_or_path=ds_config) if point.zero_stage == 3 else nullcontext()
    with partitioned:
        return build_model(request.spec, kernels=point.kernels, checkpointing=point.checkpointing,
                           sequence=sequence, seed=request.seed)
