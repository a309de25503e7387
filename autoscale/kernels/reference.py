"""Plain torch references: the `torch` kernel set, and the truth the Triton kernels are tested against.

Each function has the signature of the public API in `kernels/__init__.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019), computed in fp32 as Llama does, cast back to x's dtype."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (normed * weight.float()).to(x.dtype)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's elementwise part (Shazeer 2020): silu(gate) * up."""
    return F.silu(gate) * up


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (as GPT-2 and Megatron-LM use)."""
    return F.gelu(x, approximate="tanh")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding (Su et al. 2021), Llama's rotate-half convention.

    q, k: (batch, heads, seq, head_dim); cos, sin: (seq, head_dim).
    """
    cos, sin = cos.to(q.dtype), sin.to(q.dtype)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                               ignore_index: int = -100, label_smoothing: float = 0.0) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, target), mean over non-ignored tokens; logits in fp32.

    hidden: (tokens, hidden); weight: (vocab, hidden); target: (tokens,).
    """
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, target, ignore_index=ignore_index, label_smoothing=label_smoothing)
