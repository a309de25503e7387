"""Rotary position embedding (Su et al. 2021, Eq. 34), Llama's rotate-half layout, on q and k in one pass.

With x = [x1, x2] split in halves of head_dim and cos = [c1, c2], sin = [s1, s2] likewise:
out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1], so
out1 = x1 c1 - x2 s1,  out2 = x2 c2 + x1 s2.
The map is linear in x; its transpose gives the backward: dx1 = g1 c1 + g2 s2, dx2 = g2 c2 - g1 s1.
One program per (batch, position) rotates every head of q and of k (grouped-query k may have fewer).
q and k are read through their strides (the model's transposed views, no copy); the results are new
tensors laid out (batch, seq, heads, head_dim) and returned as (batch, heads, seq, head_dim) views,
so nothing is changed in place under autograd. Gradients for cos and sin, rarely wanted (they are
buffers), are summed in torch from saved q and k only when cos or sin requires grad.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoscale.kernels import reference
from autoscale.kernels._dispatch import unsupported_reason, warn_fallback
from autoscale.kernels._launch import is_interpreted


@triton.jit
def _rotate_heads(x_ptr, batch_stride, head_stride, seq_stride, out_ptr, batch, position, seq_len, n_heads,
                  c1, c2, s1, s2, HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
                  TRANSPOSE: tl.constexpr):
    heads = tl.arange(0, BLOCK_H)[:, None]
    dims = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < n_heads) & (dims < HALF)
    x_offsets = batch * batch_stride + position * seq_stride + heads * head_stride + dims
    x1 = tl.load(x_ptr + x_offsets, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + x_offsets + HALF, mask=mask, other=0.0).to(tl.float32)
    if TRANSPOSE:
        out1 = x1 * c1 + x2 * s2
        out2 = x2 * c2 - x1 * s1
    else:
        out1 = x1 * c1 - x2 * s1
        out2 = x2 * c2 + x1 * s2
    out_offsets = ((batch * seq_len + position) * n_heads + heads) * (2 * HALF) + dims
    tl.store(out_ptr + out_offsets, out1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_ptr + out_offsets + HALF, out2.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_kernel(q_ptr, q_batch_stride, q_head_stride, q_seq_stride, k_ptr, k_batch_stride, k_head_stride,
                   k_seq_stride, cos_ptr, sin_ptr, q_out_ptr, k_out_ptr, seq_len, n_q_heads, n_k_heads,
                   HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, TRANSPOSE: tl.constexpr):
    program = tl.program_id(0).to(tl.int64)
    batch = program // seq_len
    position = program % seq_len
    dims = tl.arange(0, BLOCK_D)[None, :]
    dim_mask = dims < HALF
    table_offsets = position * (2 * HALF) + dims
    c1 = tl.load(cos_ptr + table_offsets, mask=dim_mask, other=0.0).to(tl.float32)
    c2 = tl.load(cos_ptr + table_offsets + HALF, mask=dim_mask, other=0.0).to(tl.float32)
    s1 = tl.load(sin_ptr + table_offsets, mask=dim_mask, other=0.0).to(tl.float32)
    s2 = tl.load(sin_ptr + table_offsets + HALF, mask=dim_mask, other=0.0).to(tl.float32)
    _rotate_heads(q_ptr, q_batch_stride, q_head_stride, q_seq_stride, q_out_ptr, batch, position, seq_len,
                  n_q_heads, c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_D, TRANSPOSE)
    _rotate_heads(k_ptr, k_batch_stride, k_head_stride, k_seq_stride, k_out_ptr, batch, position, seq_len,
                  n_k_heads, c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_D, TRANSPOSE)


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def rotary_launch(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, transpose: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (or, with transpose, un-rotate: the backward) q and k; cos and sin already in q's dtype."""
    q, k = _unit_last_stride(q), _unit_last_stride(k)
    batch, n_q_heads, seq_len, head_dim = q.shape
    n_k_heads = k.shape[1]
    q_out = torch.empty((batch, seq_len, n_q_heads, head_dim), dtype=q.dtype, device=q.device)
    k_out = torch.empty((batch, seq_len, n_k_heads, head_dim), dtype=k.dtype, device=k.device)
    half = head_dim // 2
    _rotary_kernel[(batch * seq_len,)](q, q.stride(0), q.stride(1), q.stride(2), k, k.stride(0), k.stride(1),
                                       k.stride(2), cos, sin, q_out, k_out, seq_len, n_q_heads, n_k_heads,
                                       HALF=half, BLOCK_H=triton.next_power_of_2(max(n_q_heads, n_k_heads)),
                                       BLOCK_D=triton.next_power_of_2(half), TRANSPOSE=transpose)
    return q_out.transpose(1, 2), k_out.transpose(1, 2)


def _table_grads(grad_q: torch.Tensor, grad_k: torch.Tensor, q: torch.Tensor, k: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """d loss / d cos and d loss / d sin, (seq, head_dim) in fp32: sums over batch and heads."""
    grad_q, grad_k, q, k = grad_q.float(), grad_k.float(), q.float(), k.float()
    grad_cos = (grad_q * q).sum((0, 1)) + (grad_k * k).sum((0, 1))
    grad_sin = (grad_q * reference._rotate_half(q)).sum((0, 1)) + (grad_k * reference._rotate_half(k)).sum((0, 1))
    return grad_cos, grad_sin


class RotaryFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        table_grads = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        cos_q, sin_q = cos.to(q.dtype).contiguous(), sin.to(q.dtype).contiguous()
        ctx.save_for_backward(cos_q, sin_q, *((q, k) if table_grads else ()))
        ctx.table_dtypes = (cos.dtype, sin.dtype)
        return rotary_launch(q, k, cos_q, sin_q, transpose=False)

    @staticmethod
    def backward(ctx, grad_q_out: torch.Tensor, grad_k_out: torch.Tensor):
        cos_q, sin_q, *saved_qk = ctx.saved_tensors
        grad_q, grad_k = rotary_launch(grad_q_out, grad_k_out, cos_q, sin_q, transpose=True)
        grad_cos = grad_sin = None
        if saved_qk:
            grad_cos, grad_sin = _table_grads(grad_q_out, grad_k_out, *saved_qk)
            grad_cos, grad_sin = grad_cos.to(ctx.table_dtypes[0]), grad_sin.to(ctx.table_dtypes[1])
        return grad_q, grad_k, grad_cos, grad_sin


_INTERPRETED = is_interpreted(_rotary_kernel)


def _shape_reason(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> str | None:
    if q.dim() != 4 or k.dim() != 4 or q.numel() == 0:
        return "q and k must be non-empty (batch, heads, seq, head_dim)"
    head_dim, seq_len = q.shape[-1], q.shape[2]
    if head_dim % 2 or k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:] or k.dtype != q.dtype:
        return "q and k differ in batch, seq, head_dim or dtype, or head_dim is odd"
    if cos.shape != (seq_len, head_dim) or sin.shape != (seq_len, head_dim):
        return "cos and sin must be (seq, head_dim)"
    return None


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused rotate-half rotary on q and k (batch, heads, seq, head_dim); returns new q, k."""
    reason = unsupported_reason((q, k, cos, sin), interpreted=_INTERPRETED) or _shape_reason(q, k, cos, sin)
    if reason is not None:
        warn_fallback("apply_rotary", reason)
        return reference.apply_rotary(q, k, cos, sin)
    return RotaryFunction.apply(q, k, cos, sin)


class Rotary(torch.nn.Module):
    """Drop-in module: forward(q, k, cos, sin) -> rotated (q, k)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return apply_rotary(q, k, cos, sin)
