"""Linear layer + cross-entropy over the vocabulary without materialising the full logits or their gradient.

The tokens are taken in chunks. For each chunk the logits (chunk, vocab) are one matmul in the
hidden dtype; a Triton program per row then computes the row's loss with an online softmax
(Milakov & Gimelshein 2018) and overwrites the logits with their gradient; two more matmuls turn
that into the chunk's grad_hidden rows and add its share of grad_weight. So the backward's work is
done in the forward (only when a gradient is wanted), and the backward just scales the stored
gradients by grad_output, in place (so a second backward through one loss raises). Peak extra
memory is one logits chunk plus grad_hidden and grad_weight, instead of torch's (tokens, vocab)
logits in the input dtype and in fp32, and their gradient.

Loss per row with label smoothing eps (Szegedy et al. 2016, Sec. 7) over V classes, as torch defines it:
loss = lse - (1 - eps) x_target - (eps / V) sum_j x_j,  d loss / d x_j = softmax_j - (1 - eps) [j = target] - eps / V.
The mean is over rows whose target is not ignore_index. With every row ignored that is 0 / 0: the
loss is nan and the gradients are zero, which is what torch's cross_entropy gives.
grad_weight accumulates chunk by chunk in the weight's dtype (`addmm_`, no (vocab, hidden) temporary),
so in bf16 it carries one rounding per chunk. Targets outside [0, vocab) other than ignore_index are
not checked (torch raises; this kernel reads an arbitrary logit).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoscale.kernels import reference
from autoscale.kernels._dispatch import unsupported_reason, warn_fallback
from autoscale.kernels._launch import is_interpreted

MAX_BLOCK_V = 4096
MIN_CHUNK_TOKENS = 1024


@triton.jit
def _cross_entropy_kernel(logits_ptr, logits_row_stride, target_ptr, loss_ptr, n_valid_ptr, n_cols,
                          ignore_index, label_smoothing, WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits_ptr += row * logits_row_stride
    target = tl.load(target_ptr + row)
    if target == ignore_index:
        if WRITE_GRAD:
            for start in range(0, n_cols, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                tl.store(logits_ptr + cols, tl.zeros([BLOCK_V], dtype=tl.float32).to(logits_ptr.dtype.element_ty),
                         mask=cols < n_cols)
        tl.store(loss_ptr + row, 0.0)
    else:
        running_max = float("-inf")
        running_sum = 0.0
        logit_sum = 0.0
        for start in range(0, n_cols, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            mask = cols < n_cols
            x = tl.load(logits_ptr + cols, mask=mask, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(running_max, tl.max(x, axis=0))
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
            running_max = new_max
            logit_sum += tl.sum(tl.where(mask, x, 0.0), axis=0)
        lse = running_max + tl.log(running_sum)
        target_logit = tl.load(logits_ptr + target).to(tl.float32)
        loss = lse - (1.0 - label_smoothing) * target_logit - label_smoothing * logit_sum / n_cols
        tl.store(loss_ptr + row, loss)
        if WRITE_GRAD:
            scale = 1.0 / tl.load(n_valid_ptr).to(tl.float32)
            for start in range(0, n_cols, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                mask = cols < n_cols
                x = tl.load(logits_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                grad = tl.exp(x - lse) - label_smoothing / n_cols
                grad = tl.where(cols == target, grad - (1.0 - label_smoothing), grad)
                tl.store(logits_ptr + cols, (grad * scale).to(logits_ptr.dtype.element_ty), mask=mask)


def default_chunk_tokens(n_tokens: int, hidden: int, vocab: int) -> int:
    """Tokens per chunk: a logits chunk about the size of `hidden`, but at least MIN_CHUNK_TOKENS rows
    so each matmul stays large enough to run near peak."""
    by_size = triton.next_power_of_2(triton.cdiv(n_tokens * hidden, vocab))
    return max(1, min(n_tokens, max(by_size, MIN_CHUNK_TOKENS)))


def fused_linear_cross_entropy_forward(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                                       ignore_index: int, label_smoothing: float, chunk_tokens: int,
                                       grad_hidden_wanted: bool, grad_weight_wanted: bool
                                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(mean loss in fp32, grad_hidden, grad_weight), the gradients for grad_output = 1 (None if not wanted)."""
    n_tokens, vocab = hidden.shape[0], weight.shape[0]
    target = target.contiguous()
    n_valid = (target != ignore_index).sum()
    loss_rows = torch.empty(n_tokens, dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden, memory_format=torch.contiguous_format) if grad_hidden_wanted else None
    grad_weight = torch.zeros_like(weight, memory_format=torch.contiguous_format) if grad_weight_wanted else None
    write_grad = grad_hidden_wanted or grad_weight_wanted
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    for start in range(0, n_tokens, chunk_tokens):
        end = min(start + chunk_tokens, n_tokens)
        hidden_chunk = hidden[start:end]
        logits = hidden_chunk @ weight.t()  # (chunk, vocab), becomes d loss / d logits in place
        _cross_entropy_kernel[(end - start,)](logits, logits.stride(0), target[start:end], loss_rows[start:end],
                                              n_valid, vocab, ignore_index, label_smoothing,
                                              WRITE_GRAD=write_grad, BLOCK_V=block_v,
                                              num_warps=32 if block_v >= 4096 else 8)
        if grad_hidden is not None:
            torch.mm(logits, weight, out=grad_hidden[start:end])
        if grad_weight is not None:
            grad_weight.addmm_(logits.t(), hidden_chunk)
    return loss_rows.sum() / n_valid, grad_hidden, grad_weight


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
                label_smoothing: float = 0.0, chunk_tokens: int | None = None, grad_enabled: bool = True
                ) -> torch.Tensor:
        """grad_enabled: whether grad mode was on at the call (inside forward it is always off, and
        needs_input_grad ignores it), so evaluation under no_grad skips the gradient matmuls."""
        chunk_tokens = chunk_tokens or default_chunk_tokens(hidden.shape[0], hidden.shape[1], weight.shape[0])
        loss, grad_hidden, grad_weight = fused_linear_cross_entropy_forward(
            hidden, weight, target, ignore_index, label_smoothing, chunk_tokens,
            grad_hidden_wanted=grad_enabled and ctx.needs_input_grad[0],
            grad_weight_wanted=grad_enabled and ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        """Scales the stored gradients in place (no second copy of grad_weight), so it can run only once."""
        if getattr(ctx, "backward_done", False):
            raise RuntimeError("fused_linear_cross_entropy: backward through the same loss twice is not "
                               "supported (its gradients were computed in the forward and scaled in place)")
        ctx.backward_done = True
        grad_hidden, grad_weight = ctx.saved_tensors
        for grad in (grad_hidden, grad_weight):
            if grad is not None:
                grad.mul_(grad_output)
        return grad_hidden, grad_weight, None, None, None, None, None


_INTERPRETED = is_interpreted(_cross_entropy_kernel)


def _shape_reason(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> str | None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1] or hidden.shape[0] == 0:
        return "hidden must be non-empty (tokens, hidden) and weight (vocab, hidden)"
    if target.shape != hidden.shape[:1] or target.is_floating_point() or hidden.dtype != weight.dtype:
        return "target must be integer (tokens,), and hidden and weight of one dtype"
    return None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                               ignore_index: int = -100, label_smoothing: float = 0.0) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, target), mean over non-ignored tokens, chunked over tokens."""
    reason = (unsupported_reason((hidden, weight, target), interpreted=_INTERPRETED)
              or _shape_reason(hidden, weight, target))
    if reason is not None:
        warn_fallback("fused_linear_cross_entropy", reason)
        return reference.fused_linear_cross_entropy(hidden, weight, target, ignore_index, label_smoothing)
    return FusedLinearCrossEntropyFunction.apply(hidden, weight, target, ignore_index, label_smoothing, None,
                                                 torch.is_grad_enabled())


class FusedLinearCrossEntropy(torch.nn.Module):
    """Drop-in loss module: forward(hidden, weight, target) with fixed ignore_index and label smoothing."""

    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fused_linear_cross_entropy(hidden, weight, target, self.ignore_index, self.label_smoothing)
