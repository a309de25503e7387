"""SwiGLU's elementwise part (Shazeer 2020, Eq. 6): out = silu(gate) * up, fused forward and backward.

One read of gate and up, one write of out, in fp32 registers with one rounding to the output dtype.
The backward recomputes sigmoid(gate) instead of saving it: with s = sigmoid(g),
d_gate = d_out * up * s * (1 + g * (1 - s)),  d_up = d_out * g * s.
gate and up may be row-strided views (the model's `chunk(2, dim=-1)` halves) and are read in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoscale.kernels import reference
from autoscale.kernels._dispatch import unsupported_reason, warn_fallback
from autoscale.kernels._launch import as_rows, is_interpreted, stable_sigmoid

BLOCK = 1024


@triton.jit
def _swiglu_forward_kernel(gate_ptr, gate_row_stride, up_ptr, up_row_stride, out_ptr, n_cols,
                           BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(gate_ptr + row * gate_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + row * up_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    out = g * stable_sigmoid(g) * u
    tl.store(out_ptr + row * n_cols + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_backward_kernel(d_out_ptr, d_out_row_stride, gate_ptr, gate_row_stride, up_ptr, up_row_stride,
                            d_gate_ptr, d_up_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    d_out = tl.load(d_out_ptr + row * d_out_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(gate_ptr + row * gate_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + row * up_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    s = stable_sigmoid(g)
    d_gate = d_out * u * s * (1.0 + g * (1.0 - s))
    d_up = d_out * g * s
    tl.store(d_gate_ptr + row * n_cols + cols, d_gate.to(d_gate_ptr.dtype.element_ty), mask=mask)
    tl.store(d_up_ptr + row * n_cols + cols, d_up.to(d_up_ptr.dtype.element_ty), mask=mask)


def _block(n_cols: int) -> int:
    return min(BLOCK, triton.next_power_of_2(n_cols))


def swiglu_forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    n_cols = gate.shape[-1]
    gate_rows, up_rows = as_rows(gate, n_cols), as_rows(up, n_cols)
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    block = _block(n_cols)
    grid = (gate_rows.shape[0], triton.cdiv(n_cols, block))
    _swiglu_forward_kernel[grid](gate_rows, gate_rows.stride(0), up_rows, up_rows.stride(0), out, n_cols,
                                 BLOCK=block)
    return out


def swiglu_backward(d_out: torch.Tensor, gate: torch.Tensor, up: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    n_cols = gate.shape[-1]
    d_out_rows, gate_rows, up_rows = as_rows(d_out, n_cols), as_rows(gate, n_cols), as_rows(up, n_cols)
    d_gate = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    d_up = torch.empty(up.shape, dtype=up.dtype, device=up.device)
    block = _block(n_cols)
    grid = (gate_rows.shape[0], triton.cdiv(n_cols, block))
    _swiglu_backward_kernel[grid](d_out_rows, d_out_rows.stride(0), gate_rows, gate_rows.stride(0), up_rows,
                                  up_rows.stride(0), d_gate, d_up, n_cols, BLOCK=block)
    return d_gate, d_up


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return swiglu_forward(gate, up)

    @staticmethod
    def backward(ctx, d_out: torch.Tensor):
        gate, up = ctx.saved_tensors
        return swiglu_backward(d_out, gate, up)


_INTERPRETED = is_interpreted(_swiglu_forward_kernel)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Fused silu(gate) * up; the reference where the kernel can't serve the call."""
    reason = unsupported_reason((gate, up), interpreted=_INTERPRETED)
    if reason is None and (gate.shape != up.shape or gate.dtype != up.dtype or gate.numel() == 0):
        reason = "gate and up differ in shape or dtype, or are empty"
    if reason is not None:
        warn_fallback("swiglu", reason)
        return reference.swiglu(gate, up)
    return SwiGLUFunction.apply(gate, up)


class SwiGLU(torch.nn.Module):
    """Drop-in module: forward(gate, up) = silu(gate) * up."""

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return swiglu(gate, up)
