"""The transformer of `models.gpt` as a DeepSpeed `PipelineModule`: a sequence of layers cut into stages.

The layers, in order: token embedding, learned positions (GPT), the blocks, the final norm, the
output projection; the loss (`PipelineLoss`) runs on the last stage. Each layer is a thin subclass
of the plain model's part with the same parameter names, taking one activation and returning one,
so a layer's weights are loaded from `build_model(spec, seed=...)`'s and a pipelined trial starts from the
weights the data-parallel reference starts from. Tied embeddings (GPT) are one `TiedLayerSpec` on
the first and the last stage, whose gradients DeepSpeed sums over the two stages.

Stages get equal numbers of blocks (DeepSpeed's "type:" partitioning), the embedding on the first
and the norm and head on the last: the layout the cost model predicts (`costmodel.memory`:
ceil(n_layers / pp) blocks per stage). Partitioning by parameter count would treat the embedding
table (50304 x 768 for GPT-3 125M, 5 blocks' worth) as 5 blocks of work on the first stage,
where it is a lookup.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from autoscale.models.gpt import Block, Norm, build_model, rotary_tables
from autoscale.models.spec import ModelSpec
from autoscale.kernels import KernelSet, get_kernel_set

TIED_EMBEDDING = "token_embedding"


class PositionStage(nn.Embedding):
    """Adds learned position embeddings to the token embeddings x (B, T, h)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(torch.arange(x.shape[1], device=x.device))


class BlockStage(Block):
    """A block that carries its own rotary tables (not saved: they are recomputed from the spec)."""

    def __init__(self, spec: ModelSpec, kernel_set: KernelSet, checkpointing: str):
        super().__init__(spec, kernel_set, checkpointing)
        self.full_recompute = checkpointing == "full"
        self.rotary = spec.position == "rotary"
        if self.rotary:
            cos, sin = rotary_tables(spec.max_seq_len, spec.head_dim)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rotary = (self.rotary_cos, self.rotary_sin) if self.rotary else None
        if self.full_recompute and self.training:
            return checkpoint(super().forward, x, rotary, use_reentrant=False)
        return super().forward(x, rotary)


class OutputStage(nn.Linear):
    """The untied head: hands the last stage's loss the hidden states and its weight, so the loss is
    the kernel set's fused linear cross-entropy, as in the plain model."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.weight


def _hidden_and_tied_weight(embedding: nn.Embedding, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, embedding.weight


class PipelineLoss:
    """Mean next-token cross-entropy of the last stage's (hidden (B, T, h), output weight) against targets (B, T)."""

    def __init__(self, kernel_set: KernelSet):
        self.kernel_set = kernel_set

    def __call__(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        hidden, weight = outputs
        B, T, _ = hidden.shape
        return self.kernel_set.fused_linear_cross_entropy(hidden.reshape(B * T, -1), weight, targets.reshape(B * T))


def pipeline_layer_specs(spec: ModelSpec, kernel_set: KernelSet, checkpointing: str) -> list:
    """The model as `PipelineModule` layers; each stage builds only its own."""
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    if spec.tie_embeddings:
        embedding = TiedLayerSpec(TIED_EMBEDDING, nn.Embedding, spec.vocab_size, spec.hidden)
        head = TiedLayerSpec(TIED_EMBEDDING, nn.Embedding, spec.vocab_size, spec.hidden,
                             forward_fn=_hidden_and_tied_weight)
    else:
        embedding = LayerSpec(nn.Embedding, spec.vocab_size, spec.hidden)
        head = LayerSpec(OutputStage, spec.hidden, spec.vocab_size, bias=False)
    positions = [LayerSpec(PositionStage, spec.max_seq_len, spec.hidden)] if spec.position == "learned" else []
    blocks = [LayerSpec(BlockStage, spec, kernel_set, checkpointing) for _ in range(spec.n_layers)]
    return [embedding, *positions, *blocks, LayerSpec(Norm, spec, kernel_set), head]


def _plain_parts(model: nn.Module) -> list[nn.Module]:
    """The plain model's part that each pipeline layer takes its weights from, in layer order."""
    positions = [model.position_embedding] if model.position_embedding is not None else []
    head = model.token_embedding if model.lm_head is None else model.lm_head
    return [model.token_embedding, *positions, *model.blocks, model.norm_final, head]


def build_pipeline_model(spec: ModelSpec, *, stages: int, kernels: str = "torch", checkpointing: str = "none",
                         seed: int = 0):
    """The model cut into `stages` pipeline stages, with the weights `build_model(spec, seed=seed)`
    draws. Every rank builds the whole plain model (same seed, same weights) and keeps its stage's
    layers."""
    from deepspeed.pipe import PipelineModule

    kernel_set = get_kernel_set(kernels)
    plain = build_model(spec, kernels=kernels, checkpointing=checkpointing, seed=seed)
    module = PipelineModule(layers=pipeline_layer_specs(spec, kernel_set, checkpointing), num_stages=stages,
                            loss_fn=PipelineLoss(kernel_set), partition_method=f"type:{BlockStage.__name__}")
    stage = module.mpu().get_stage_id()
    with torch.no_grad():
        for index, part in enumerate(_plain_parts(plain)):
            if module.stage_owner(index) != stage:
                continue
            is_tied = spec.tie_embeddings and part is plain.token_embedding
            layer = module.tied_modules[TIED_EMBEDDING] if is_tied else module.get_submodule(str(index))
            layer.load_state_dict(part.state_dict())
    return module
