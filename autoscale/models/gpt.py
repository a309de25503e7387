"""The transformer autoscale trains: a compact GPT / Llama in the manner of nanoGPT's model.py.

Reads top to bottom: norms, attention, MLP, block, model. The norm, MLP activation, rotary
embedding and loss are taken from a `KernelSet` chosen at build time, so a trial can swap torch
for Triton kernels without touching the model. Activation checkpointing is a build-time choice:
"none", "selective" (recompute only the attention core, Korthikanti et al. 2022 Sec. 4.2) or
"full" (recompute every block). A `SequenceSplit` chosen at build time splits each sequence over
a group of ranks (Ulysses, `models.sequence_parallel`): the model then sees its slice of tokens.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from autoscale.models.sequence_parallel import WHOLE_SEQUENCE, SequenceSplit
from autoscale.models.spec import ModelSpec
from autoscale.point import knob_choices
from autoscale.kernels import KernelSet, get_kernel_set


class Norm(nn.Module):
    """LayerNorm or RMSNorm; owns the parameters, the kernel set does the arithmetic."""

    def __init__(self, spec: ModelSpec, kernel_set: KernelSet):
        super().__init__()
        self.kind, self.eps, self.kernel_set = spec.norm, spec.norm_eps, kernel_set
        self.weight = nn.Parameter(torch.ones(spec.hidden))
        self.bias = nn.Parameter(torch.zeros(spec.hidden)) if spec.norm == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm":
            return self.kernel_set.rms_norm(x, self.weight, self.eps)
        return self.kernel_set.layer_norm(x, self.weight, self.bias, self.eps)


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, head_dim), rotate-half layout (Su et al. 2021)."""
    inverse_frequencies = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(seq_len).float(), inverse_frequencies)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, kernel_set: KernelSet, selective_recompute: bool,
                 sequence: SequenceSplit = WHOLE_SEQUENCE):
        super().__init__()
        self.spec, self.kernel_set, self.selective_recompute = spec, kernel_set, selective_recompute
        self.qkv = nn.Linear(spec.hidden, spec.hidden + 2 * spec.kv_hidden, bias=spec.bias)
        self.out = nn.Linear(spec.hidden, spec.hidden, bias=spec.bias)
        self.core = sequence.attention(self._attend)  # whole sequences, or this rank's slice of them

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, _ = x.shape
        spec, head_dim = self.spec, self.spec.head_dim
        qkv = self.qkv(x)
        # Tensor parallelism shards qkv by heads, so this rank's head counts are read off the tensor.
        shards = (spec.hidden + 2 * spec.kv_hidden) // qkv.shape[-1]
        n_heads, n_kv_heads = spec.n_heads // shards, spec.n_kv_heads // shards
        q, k, v = qkv.split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim], dim=-1)
        q = q.view(B, T, n_heads, head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, n_kv_heads, head_dim).transpose(1, 2)
        v = v.view(B, T, n_kv_heads, head_dim).transpose(1, 2)
        if rotary is not None:
            q, k = self.kernel_set.apply_rotary(q, k, rotary[0][:T], rotary[1][:T])
        y = self.core(q, k, v)  # (B, nh, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, n_heads * head_dim))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n_heads, n_kv_heads = q.shape[1], k.shape[1]
        if n_kv_heads != n_heads:
            repeat = n_heads // n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if self.selective_recompute and self.training:
            return checkpoint(_causal_attention, q, k, v, use_reentrant=False)
        return _causal_attention(q, k, v)


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec, kernel_set: KernelSet):
        super().__init__()
        self.gated = spec.activation == "swiglu"
        self.kernel_set = kernel_set
        width = 2 * spec.ffn_hidden if self.gated else spec.ffn_hidden
        self.up = nn.Linear(spec.hidden, width, bias=spec.bias)
        self.down = nn.Linear(spec.ffn_hidden, spec.hidden, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(self.kernel_set.swiglu(gate, up))
        return self.down(self.kernel_set.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, kernel_set: KernelSet, checkpointing: str,
                 sequence: SequenceSplit = WHOLE_SEQUENCE):
        super().__init__()
        self.norm_attention = Norm(spec, kernel_set)
        self.attention = Attention(spec, kernel_set, selective_recompute=checkpointing == "selective",
                                   sequence=sequence)
        self.norm_mlp = Norm(spec, kernel_set)
        self.mlp = MLP(spec, kernel_set)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attention(self.norm_attention(x), rotary)
        return x + self.mlp(self.norm_mlp(x))


class Transformer(nn.Module):
    def __init__(self, spec: ModelSpec, kernel_set: KernelSet, checkpointing: str = "none",
                 sequence: SequenceSplit = WHOLE_SEQUENCE, seed: int = 0):
        super().__init__()
        if checkpointing not in knob_choices("checkpointing"):
            raise ValueError(f"checkpointing must be one of {knob_choices('checkpointing')}, got {checkpointing!r}")
        self.spec, self.kernel_set, self.checkpointing, self.sequence = spec, kernel_set, checkpointing, sequence
        self.token_embedding = nn.Embedding(spec.vocab_size, spec.hidden)
        self.position_embedding = (nn.Embedding(spec.max_seq_len, spec.hidden)
                                   if spec.position == "learned" else None)
        self.blocks = nn.ModuleList(Block(spec, kernel_set, checkpointing, sequence) for _ in range(spec.n_layers))
        self.norm_final = Norm(spec, kernel_set)
        self.lm_head = None if spec.tie_embeddings else nn.Linear(spec.hidden, spec.vocab_size, bias=False)
        if spec.position == "rotary":
            cos, sin = rotary_tables(spec.max_seq_len, spec.head_dim)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        names = {id(parameter): name for name, parameter in self.named_parameters()}
        self.apply(lambda module: self._init_weights(module, seed=seed, names=names))

    @staticmethod
    def _init_weights(module: nn.Module, *, seed: int, names: dict[int, str]) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases. Each weight is drawn in fp32 from
        its own generator, seeded by the model's seed and the weight's name, and copied in: the values
        depend neither on the order nor on the dtype the modules were built in, so a model built
        under `deepspeed.zero.Init` (bf16 partitions; its `Module.apply` gathers each module's
        parameters around this function and keeps rank 0's) equals the whole model built with the
        same seed."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            weight = module.weight
            generator = torch.Generator().manual_seed(parameter_seed(seed, names[id(weight)]))
            host = "meta" if weight.is_meta else "cpu"  # drawn on the host wherever the weight lives
            values = torch.empty_like(weight, dtype=torch.float32, device=host)
            with torch.no_grad():
                weight.copy_(values.normal_(mean=0.0, std=0.02, generator=generator))
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def output_weight(self) -> torch.Tensor:
        return self.token_embedding.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy; tokens and targets (B, T): the whole sequences, or this rank's
        slice of them under sequence parallelism, whose positions start at the slice's offset."""
        B, T = tokens.shape
        first = self.sequence.first_position(T)
        x = self.token_embedding(tokens)  # (B, T, h)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(first, first + T, device=tokens.device))
        rotary = ((self.rotary_cos[first:first + T], self.rotary_sin[first:first + T])
                  if self.spec.position == "rotary" else None)
        for block in self.blocks:
            if self.checkpointing == "full" and self.training:
                x = checkpoint(block, x, rotary, use_reentrant=False)
            else:
                x = block(x, rotary)
        x = self.norm_final(x)
        return self.kernel_set.fused_linear_cross_entropy(
            x.reshape(B * T, -1), self.output_weight(), targets.reshape(B * T))


def parameter_seed(seed: int, name: str) -> int:
    """The seed of one parameter's generator: the model's seed and the parameter's name, hashed
    stably to the 32 bits torch's CPU generator (a Mersenne Twister) is seeded with."""
    return zlib.crc32(f"{seed}/{name}".encode())


def build_model(spec: ModelSpec, *, kernels: str = "torch", checkpointing: str = "none",
                sequence: SequenceSplit = WHOLE_SEQUENCE, seed: int = 0) -> Transformer:
    return Transformer(spec, get_kernel_set(kernels), checkpointing, sequence, seed)


def tensor_parallel_layer_specs(spec: ModelSpec, tp: int) -> list[dict]:
    """How DeepSpeed's AutoTP shards this model's linears over `tp` ranks (Megatron's split, Shoeybi
    et al. 2019, Sec. 3): q, k, v and the MLP's up projection by output columns, the attention
    output and the MLP's down projection by input rows; norms, embeddings and the head replicated.
    The fused qkv is split as three sub-matrices of unequal width (grouped-query attention), and
    SwiGLU's fused gate-and-up as two, so each rank holds whole heads and matching gate and up rows."""
    if spec.n_kv_heads % tp:
        raise ValueError(f"tp {tp} does not divide the {spec.n_kv_heads} key-value heads of {spec.name}")
    up: dict = {"shape": [2, -1], "partition_dim": 0} if spec.activation == "swiglu" else {}
    return [
        {"patterns": [r".*\.attention\.qkv\.weight$"], "partition_type": "column",
         "shape": [[spec.hidden, spec.kv_hidden, spec.kv_hidden], -1], "partition_dim": 0},
        {"patterns": [r".*\.attention\.out\.weight$", r".*\.mlp\.down\.weight$"], "partition_type": "row"},
        {"patterns": [r".*\.mlp\.up\.weight$"], "partition_type": "column", **up},
    ]
