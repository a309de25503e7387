"""LayerNorm (Ba et al. 2016) as one Triton program per row, forward and backward.

y = x_hat * w + b with x_hat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps) (biased variance),
in fp32, cast to x's dtype. Backward, with g = dy * w:
dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),  dw = sum_rows dy * x_hat,  db = sum_rows dy.
The forward saves mean and rstd (fp32, one each per row); dw and db are summed per program first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoscale.kernels import reference
from autoscale.kernels._dispatch import unsupported_reason, warn_fallback
from autoscale.kernels._launch import MAX_ROW_BLOCK, as_rows, is_interpreted, reduction_programs, row_block


@triton.jit
def _layer_norm_forward_kernel(x_ptr, x_row_stride, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, n_cols, eps,
                               HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    centred = tl.where(mask, x - mean, 0.0)
    rstd = tl.rsqrt(tl.sum(centred * centred, axis=0) / n_cols + eps)
    y = centred * rstd * tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * n_cols + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_backward_kernel(dy_ptr, dy_row_stride, x_ptr, x_row_stride, w_ptr, mean_ptr, rstd_ptr,
                                dx_ptr, dw_partial_ptr, db_partial_ptr, n_rows, n_cols, rows_per_program,
                                BLOCK: tl.constexpr):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    first = program * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    first64 = first.to(tl.int64)
    dy_ptr += first64 * dy_row_stride
    x_ptr += first64 * x_row_stride
    dx_ptr += first64 * n_cols
    mean_ptr += first64
    rstd_ptr += first64
    for _ in range(first, last):
        dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr)
        x_hat = tl.where(mask, (x - tl.load(mean_ptr)) * rstd, 0.0)
        g = dy * w
        dx = rstd * (g - tl.sum(g, axis=0) / n_cols - x_hat * (tl.sum(g * x_hat, axis=0) / n_cols))
        tl.store(dx_ptr + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
        db += dy
        dy_ptr += dy_row_stride
        x_ptr += x_row_stride
        dx_ptr += n_cols
        mean_ptr += 1
        rstd_ptr += 1
    tl.store(dw_partial_ptr + program * n_cols + cols, dw, mask=mask)
    tl.store(db_partial_ptr + program * n_cols + cols, db, mask=mask)


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, x as rows, mean per row, rstd per row)."""
    n_cols = x.shape[-1]
    x_rows = as_rows(x, n_cols)
    n_rows = x_rows.shape[0]
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    block, num_warps = row_block(n_cols)
    weight = weight.contiguous()
    _layer_norm_forward_kernel[(n_rows,)](x_rows, x_rows.stride(0), weight,
                                          weight if bias is None else bias.contiguous(), y, mean, rstd,
                                          n_cols, eps, HAS_BIAS=bias is not None, BLOCK=block,
                                          num_warps=num_warps)
    return y.view(x.shape), x_rows, mean, rstd


def layer_norm_backward(dy: torch.Tensor, x_rows: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                        rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx shaped like dy, dw, db summed in fp32)."""
    n_rows, n_cols = x_rows.shape
    dy_rows = as_rows(dy, n_cols)
    dx = torch.empty((n_rows, n_cols), dtype=x_rows.dtype, device=x_rows.device)
    programs = reduction_programs(n_rows, x_rows.device)
    dw_partial = torch.empty((programs, n_cols), dtype=torch.float32, device=x_rows.device)
    db_partial = torch.empty_like(dw_partial)
    block, num_warps = row_block(n_cols)
    _layer_norm_backward_kernel[(programs,)](dy_rows, dy_rows.stride(0), x_rows, x_rows.stride(0),
                                             weight.contiguous(), mean, rstd, dx, dw_partial, db_partial,
                                             n_rows, n_cols, triton.cdiv(n_rows, programs), BLOCK=block,
                                             num_warps=num_warps)
    return dx.view(dy.shape), dw_partial.sum(0), db_partial.sum(0)


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
                ) -> torch.Tensor:
        y, x_rows, mean, rstd = layer_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x_rows, weight, mean, rstd)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x_rows, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = layer_norm_backward(dy, x_rows, weight, mean, rstd)
        return dx, dw.to(weight.dtype), None if ctx.bias_dtype is None else db.to(ctx.bias_dtype), None


_INTERPRETED = is_interpreted(_layer_norm_forward_kernel)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5
               ) -> torch.Tensor:
    """Fused LayerNorm over the last dimension (bias may be None); the reference where the kernel can't serve."""
    reason = unsupported_reason((x, weight, bias), interpreted=_INTERPRETED)
    if reason is None and x.shape[-1] > MAX_ROW_BLOCK:
        reason = f"rows longer than {MAX_ROW_BLOCK} elements"
    if reason is None and (weight.shape != x.shape[-1:] or (bias is not None and bias.shape != weight.shape)
                           or x.numel() == 0):
        reason = "weight or bias shape does not match x's last dimension, or x is empty"
    if reason is not None:
        warn_fallback("layer_norm", reason)
        return reference.layer_norm(x, weight, bias, eps)
    return LayerNormFunction.apply(x, weight, bias, eps)


class LayerNorm(torch.nn.Module):
    """Drop-in LayerNorm module over the last dimension, with weight and bias."""

    def __init__(self, hidden: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.bias = torch.nn.Parameter(torch.ones(hidden)), torch.nn.Parameter(torch.zeros(hidden))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)
