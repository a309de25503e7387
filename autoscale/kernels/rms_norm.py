"""RMSNorm (Zhang & Sennrich 2019) as one Triton program per row, forward and backward.

y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), computed in fp32 and cast to x's dtype,
as `kernels.reference.rms_norm` does. Backward (differentiating y = x_hat * w, x_hat = x * rstd):
dx = rstd * (dy*w - x_hat * mean(dy*w * x_hat)),  dw = sum over rows of dy * x_hat.
The forward saves only rstd (one fp32 per row); dw is summed per program, then across programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoscale.kernels import reference
from autoscale.kernels._dispatch import unsupported_reason, warn_fallback
from autoscale.kernels._launch import MAX_ROW_BLOCK, as_rows, is_interpreted, reduction_programs, row_block


@triton.jit
def _rms_norm_forward_kernel(x_ptr, x_row_stride, w_ptr, y_ptr, rstd_ptr, n_cols, eps,
                             BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * n_cols + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_backward_kernel(dy_ptr, dy_row_stride, x_ptr, x_row_stride, w_ptr, rstd_ptr, dx_ptr,
                              dw_partial_ptr, n_rows, n_cols, rows_per_program, BLOCK: tl.constexpr):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    first = program * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    first64 = first.to(tl.int64)
    dy_ptr += first64 * dy_row_stride
    x_ptr += first64 * x_row_stride
    dx_ptr += first64 * n_cols
    rstd_ptr += first64
    for _ in range(first, last):
        dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr)
        x_hat = x * rstd
        dy_w = dy * w
        dx = rstd * (dy_w - x_hat * (tl.sum(dy_w * x_hat, axis=0) / n_cols))
        tl.store(dx_ptr + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
        dy_ptr += dy_row_stride
        x_ptr += x_row_stride
        dx_ptr += n_cols
        rstd_ptr += 1
    tl.store(dw_partial_ptr + program * n_cols + cols, dw, mask=mask)


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, x as rows, rstd per row)."""
    n_cols = x.shape[-1]
    x_rows = as_rows(x, n_cols)
    y = torch.empty((x_rows.shape[0], n_cols), dtype=x.dtype, device=x.device)
    rstd = torch.empty(x_rows.shape[0], dtype=torch.float32, device=x.device)
    block, num_warps = row_block(n_cols)
    _rms_norm_forward_kernel[(x_rows.shape[0],)](x_rows, x_rows.stride(0), weight.contiguous(), y, rstd,
                                                 n_cols, eps, BLOCK=block, num_warps=num_warps)
    return y.view(x.shape), x_rows, rstd


def rms_norm_backward(dy: torch.Tensor, x_rows: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx shaped like dy, dw in weight's dtype)."""
    n_rows, n_cols = x_rows.shape
    dy_rows = as_rows(dy, n_cols)
    dx = torch.empty((n_rows, n_cols), dtype=x_rows.dtype, device=x_rows.device)
    programs = reduction_programs(n_rows, x_rows.device)
    dw_partial = torch.empty((programs, n_cols), dtype=torch.float32, device=x_rows.device)
    block, num_warps = row_block(n_cols)
    _rms_norm_backward_kernel[(programs,)](dy_rows, dy_rows.stride(0), x_rows, x_rows.stride(0),
                                           weight.contiguous(), rstd, dx, dw_partial, n_rows, n_cols,
                                           triton.cdiv(n_rows, programs), BLOCK=block, num_warps=num_warps)
    return dx.view(dy.shape), dw_partial.sum(0).to(weight.dtype)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, x_rows, rstd = rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x_rows, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x_rows, weight, rstd = ctx.saved_tensors
        dx, dw = rms_norm_backward(dy, x_rows, weight, rstd)
        return dx, dw, None


_INTERPRETED = is_interpreted(_rms_norm_forward_kernel)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fused RMSNorm over the last dimension; the reference where the kernel can't serve the call."""
    reason = unsupported_reason((x, weight), interpreted=_INTERPRETED)
    if reason is None and x.shape[-1] > MAX_ROW_BLOCK:
        reason = f"rows longer than {MAX_ROW_BLOCK} elements"
    if reason is None and (weight.shape != x.shape[-1:] or x.numel() == 0):
        reason = "weight shape does not match x's last dimension, or x is empty"
    if reason is not None:
        warn_fallback("rms_norm", reason)
        return reference.rms_norm(x, weight, eps)
    return RMSNormFunction.apply(x, weight, eps)


class RMSNorm(torch.nn.Module):
    """Drop-in RMSNorm module over the last dimension (Llama's, weight initialised to ones)."""

    def __init__(self, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = torch.nn.Parameter(torch.ones(hidden)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
