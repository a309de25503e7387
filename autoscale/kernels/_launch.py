"""What the Triton kernel files share: block sizes, row views, program counts, and one device function."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROW_BLOCK = 65536
"""Longest row a one-block-per-row kernel (the norms) holds; longer rows fall back to the reference."""


def is_interpreted(kernel) -> bool:
    """Whether a @triton.jit function was built for the interpreter (TRITON_INTERPRET=1 at its import)."""
    return type(kernel).__name__ == "InterpretedFunction"


def row_block(n_cols: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for a kernel that holds one row of n_cols in registers."""
    block = triton.next_power_of_2(n_cols)
    num_warps = 4 if block < 2048 else 8 if block < 8192 else 16 if block < 32768 else 32
    return block, num_warps


def as_rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """t as a (rows, n_cols) view with unit column stride, copying only when no such view exists."""
    rows = t.reshape(-1, n_cols)
    return rows if rows.stride(-1) == 1 or n_cols == 1 else rows.contiguous()


def reduction_programs(n_rows: int, device: torch.device) -> int:
    """Programs for a kernel that loops over rows and reduces a per-column partial sum (norm weight grads).

    One per SM on CUDA keeps the partial-sum buffer small; in the interpreter every program is a
    Python loop iteration, so a few suffice.
    """
    if device.type == "cuda":
        return max(1, min(n_rows, torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(n_rows, 4))


@triton.jit
def stable_sigmoid(x):
    """sigmoid(x) through exp(-|x|), which never overflows (tl.sigmoid's exp(-x) does for x < -88 in fp32)."""
    decay = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay))
