"""GELU, tanh approximation (Hendrycks & Gimpel 2016, Sec. 2), fused forward and backward.

gelu(x) = 0.5 x (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x^3). Since 0.5 (1 + tanh(z)) =
sigmoid(2z), the kernel computes y = x * s with s = sigmoid(2z), which needs no tanh and saturates
cleanly for large |x|; the derivative is dy/dx = s + x * 2 s (1 - s) * dz/dx,
dz/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2). The backward recomputes s from the saved input.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoscale.kernels import reference
from autoscale.kernels._dispatch import unsupported_reason, warn_fallback
from autoscale.kernels._launch import is_interpreted, stable_sigmoid

BLOCK = 1024
SQRT_2_OVER_PI = 0.7978845608028654
CUBIC = 0.044715


@triton.jit
def _gelu_forward_kernel(x_ptr, y_ptr, n_elements, SQRT_2_OVER_PI: tl.constexpr, CUBIC: tl.constexpr,
                         BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    s = stable_sigmoid(2.0 * SQRT_2_OVER_PI * (x + CUBIC * x * x * x))
    tl.store(y_ptr + offsets, (x * s).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gelu_backward_kernel(dy_ptr, x_ptr, dx_ptr, n_elements, SQRT_2_OVER_PI: tl.constexpr,
                          CUBIC: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    s = stable_sigmoid(2.0 * SQRT_2_OVER_PI * (x + CUBIC * x * x * x))
    dz_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x)
    dx = dy * (s + 2.0 * x * s * (1.0 - s) * dz_dx)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def gelu_forward(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    block = min(BLOCK, triton.next_power_of_2(x.numel()))
    _gelu_forward_kernel[(triton.cdiv(x.numel(), block),)](x, y, x.numel(), SQRT_2_OVER_PI=SQRT_2_OVER_PI,
                                                             CUBIC=CUBIC, BLOCK=block)
    return y


def gelu_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    dy, x = dy.contiguous(), x.contiguous()
    dx = torch.empty_like(x)
    block = min(BLOCK, triton.next_power_of_2(x.numel()))
    _gelu_backward_kernel[(triton.cdiv(x.numel(), block),)](dy, x, dx, x.numel(), SQRT_2_OVER_PI=SQRT_2_OVER_PI,
                                                              CUBIC=CUBIC, BLOCK=block)
    return dx


class GELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return gelu_forward(x)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (x,) = ctx.saved_tensors
        return gelu_backward(dy, x)


_INTERPRETED = is_interpreted(_gelu_forward_kernel)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Fused tanh-approximate GELU; the reference where the kernel can't serve the call."""
    reason = unsupported_reason((x,), interpreted=_INTERPRETED)
    if reason is None and x.numel() == 0:
        reason = "x is empty"
    if reason is not None:
        warn_fallback("gelu", reason)
        return reference.gelu(x)
    return GELUFunction.apply(x)


class GELU(torch.nn.Module):
    """Drop-in module: tanh-approximate GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x)
