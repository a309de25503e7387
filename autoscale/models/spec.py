"""What a model is, in numbers: the one description the engine, the cost model and the exporters share.

A `ModelSpec` is enough to build the torch module (`autoscale.models.gpt`) and to count its
parameters and FLOPs without building it, so clusters we cannot run on can still be planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoscale.errors import UserError

NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "swiglu")
POSITIONS = ("learned", "rotary")
ATTENTIONS = ("sdpa", "flash", "eager")
"""How the attention core runs. Fused kernels keep the output and log-sum-exp, never the s x s
scores (Dao et al. 2022, Sec. 3.1). sdpa: PyTorch's scaled_dot_product_attention on (B, nh, T, hd)
tensors, whose output is transposed into a new tensor for the out-projection (autoscale's own
model); flash: a kernel on (B, T, nh, hd) tensors, whose output is the out-projection's input
(FlashAttention's flash_attn_func, as MPT uses it); eager: the scores, softmax and dropout mask are
materialised, as in Megatron-LM before flash attention (Korthikanti et al. 2022, Sec. 4.1)."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer. GPT-style: layernorm, gelu, learned positions, biases, tied head.

    Llama-style: rmsnorm, swiglu, rotary, no biases, untied head. `n_kv_heads` < `n_heads` is
    grouped-query attention (Ainslie et al. 2023; 1 is multi-query), `ffn_hidden` the MLP width
    (SwiGLU's gate and up projections each have it), `attention` how the attention core runs.
    """

    name: str
    n_layers: int
    hidden: int
    n_heads: int
    vocab_size: int
    max_seq_len: int
    ffn_hidden: int = 0  # 0 means 4 * hidden
    n_kv_heads: int = 0  # 0 means n_heads (no grouped-query attention)
    norm: str = "layernorm"
    activation: str = "gelu"
    position: str = "learned"
    bias: bool = True
    tie_embeddings: bool = True
    attention: str = "sdpa"
    norm_eps: float = 1e-5
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for label, value in (("n_layers", self.n_layers), ("hidden", self.hidden),
                             ("n_heads", self.n_heads), ("vocab_size", self.vocab_size),
                             ("max_seq_len", self.max_seq_len)):
            if not isinstance(value, int) or value <= 0:
                raise UserError(f"model {self.name!r}: {label} must be a positive integer, got {value!r}")
        if self.hidden % self.n_heads:
            raise UserError(f"model {self.name!r}: hidden {self.hidden} is not divisible by n_heads {self.n_heads}")
        if self.ffn_hidden == 0:
            object.__setattr__(self, "ffn_hidden", 4 * self.hidden)
        if self.n_kv_heads == 0:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model {self.name!r}: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.norm not in NORMS:
            raise UserError(f"model {self.name!r}: norm must be one of {NORMS}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"model {self.name!r}: activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.attention not in ATTENTIONS:
            raise UserError(f"model {self.name!r}: attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.position not in POSITIONS:
            raise UserError(f"model {self.name!r}: position must be one of {POSITIONS}, got {self.position!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def kv_hidden(self) -> int:
        return self.n_kv_heads * self.head_dim

    # ---- parameters -------------------------------------------------------------------------

    def layer_matmul_params(self) -> int:
        """Weights of the matrix multiplies in one block (q, k, v, out projections and the MLP)."""
        h, f = self.hidden, self.ffn_hidden
        attention = h * (h + 2 * self.kv_hidden) + h * h
        mlp = (3 if self.activation == "swiglu" else 2) * h * f
        return attention + mlp

    def layer_params(self) -> int:
        h, f = self.hidden, self.ffn_hidden
        biases = 0
        if self.bias:
            up_width = 2 * f if self.activation == "swiglu" else f
            biases = (h + 2 * self.kv_hidden) + h + up_width + h
        norms = 2 * self.norm_params_per_norm()
        return self.layer_matmul_params() + biases + norms

    def norm_params_per_norm(self) -> int:
        return self.hidden * (2 if self.norm == "layernorm" else 1)

    def embedding_params(self) -> int:
        positions = self.max_seq_len * self.hidden if self.position == "learned" else 0
        return self.vocab_size * self.hidden + positions

    def param_count(self) -> int:
        """Exact number of parameters of the module `autoscale.models.gpt.build_model` builds."""
        head = 0 if self.tie_embeddings else self.vocab_size * self.hidden
        return (self.embedding_params() + self.n_layers * self.layer_params()
                + self.norm_params_per_norm() + head)

    def parameter_tensors(self) -> int:
        """Parameter tensors of the built module: what DeepSpeed hooks one by one (ZeRO-2/3 gradient
        hooks). A block has two norms (weight, and bias for layernorm) and four linears (fused qkv,
        out, up, down; weight and, with biases, a bias)."""
        per_norm = 2 if self.norm == "layernorm" else 1
        per_layer = 2 * per_norm + 4 * (2 if self.bias else 1)
        embeddings = 2 if self.position == "learned" else 1
        head = 0 if self.tie_embeddings else 1
        return self.n_layers * per_layer + embeddings + per_norm + head

    def parameter_modules(self) -> int:
        """Modules that own parameters: what ZeRO-3 gathers and releases one by one."""
        embeddings = 2 if self.position == "learned" else 1
        return self.n_layers * 6 + embeddings + 1 + (0 if self.tie_embeddings else 1)

    # ---- FLOPs ------------------------------------------------------------------------------

    def forward_flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs for one token: 2 per multiply-accumulate of every matmul.

        Megatron-style count (Narayanan et al. 2021, Appendix): all matmuls of the blocks, the
        attention scores and their product with V over the full sequence (2 * 2 * s * h per token
        and layer; causal masking is not discounted), and the logit layer. Norms, activations and
        softmax are ignored, as there.
        """
        per_layer = 2 * self.layer_matmul_params() + 4 * seq_len * self.hidden
        return self.n_layers * per_layer + 2 * self.hidden * self.vocab_size

    def train_flops_per_token(self, seq_len: int, *, recompute: bool = False) -> int:
        """Model FLOPs of one training token: forward + backward (twice the forward).

        With full activation recomputation the hardware also re-runs the blocks' forward (not the
        logit layer), the 4/3 factor of Narayanan et al. 2021 eq. (3); MFU counts without it.
        """
        flops = 3 * self.forward_flops_per_token(seq_len)
        if recompute:
            flops += self.n_layers * (2 * self.layer_matmul_params() + 4 * seq_len * self.hidden)
        return flops
