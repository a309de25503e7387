"""Forward+backward time and peak memory of each kernel, per kernel set: torch eager, torch.compile, Triton.

On CUDA the shapes are LLM sizes (hidden 2048-8192, vocab 32k-128k, 4k-16k tokens) in bf16; set
KERNELS_BENCH_SIZES=full for more than the one representative size per kernel. On CPU only torch
eager runs, at small sizes: the Triton side is not measurable there (the interpreter is a Python
loop, not a performance measure), and torch.compile is skipped unless KERNELS_BENCH_CPU_COMPILE=1.
Each record's extra_info says what, where and when: kernel, set, shape, dtype, device name, UTC
timestamp, torch and triton versions, peak MB (CUDA only). A kernel set that falls back to the
reference fails its benchmark instead of timing the reference under the wrong name.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from autoscale.kernels import KernelSet, get_kernel_set

pytestmark = pytest.mark.filterwarnings("error::autoscale.kernels._dispatch.KernelFallbackWarning")

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.bfloat16 if CUDA else torch.float32
IMPLS = ("torch", "triton", "compile")  # compile last: its compile time must not crowd out the others
ROUNDS, WARMUP_ROUNDS = (20, 3) if CUDA else (5, 1)


@dataclass(frozen=True)
class Case:
    """One kernel at one shape: how to make its inputs, and how to call it from a kernel set."""

    kernel: str
    shape: str
    make_inputs: Callable[[], list[torch.Tensor]]
    call: Callable[[KernelSet, list[torch.Tensor]], torch.Tensor | tuple[torch.Tensor, ...]]


def _tensor(*shape: int, scale: float = 1.0, grad: bool = True) -> torch.Tensor:
    return (torch.randn(*shape, device=DEVICE) * scale).to(DTYPE).requires_grad_(grad)


def _norm(kernel: str, tokens: int, hidden: int) -> Case:
    def make():
        extra = [_tensor(hidden)] if kernel == "layer_norm" else []
        return [_tensor(tokens, hidden), (1 + 0.1 * _tensor(hidden, grad=False)).requires_grad_(), *extra]
    return Case(kernel, f"tokens={tokens} hidden={hidden}", make, lambda ks, a: getattr(ks, kernel)(*a))


def _elementwise(kernel: str, tokens: int, width: int) -> Case:
    def make():
        return [_tensor(tokens, width) for _ in range(2 if kernel == "swiglu" else 1)]
    return Case(kernel, f"tokens={tokens} width={width}", make, lambda ks, a: getattr(ks, kernel)(*a))


def _rotary(batch: int, heads: int, seq: int, head_dim: int) -> Case:
    def make():
        angles = torch.randn(seq, head_dim, device=DEVICE)
        return [_tensor(batch, heads, seq, head_dim), _tensor(batch, heads, seq, head_dim), angles.cos(),
                angles.sin()]
    return Case("apply_rotary", f"batch={batch} heads={heads} seq={seq} head_dim={head_dim}", make,
                lambda ks, a: ks.apply_rotary(*a))


def _cross_entropy(tokens: int, hidden: int, vocab: int) -> Case:
    def make():
        target = torch.randint(0, vocab, (tokens,), device=DEVICE)
        target[::10] = -100
        return [_tensor(tokens, hidden), _tensor(vocab, hidden, scale=hidden ** -0.5), target]
    return Case("fused_linear_cross_entropy", f"tokens={tokens} hidden={hidden} vocab={vocab}", make,
                lambda ks, a: ks.fused_linear_cross_entropy(*a))


def cases() -> list[Case]:
    if not CUDA:
        return [_norm("rms_norm", 256, 512), _norm("layer_norm", 256, 512), _elementwise("swiglu", 256, 1024),
                _elementwise("gelu", 256, 2048), _rotary(1, 4, 128, 64), _cross_entropy(256, 256, 4096)]
    quick = [_norm("rms_norm", 16384, 4096), _norm("layer_norm", 16384, 4096),
             _elementwise("swiglu", 8192, 11008), _elementwise("gelu", 8192, 16384), _rotary(4, 32, 4096, 128),
             _cross_entropy(8192, 4096, 128256)]
    if os.environ.get("KERNELS_BENCH_SIZES") != "full":
        return quick
    return quick + [_norm("rms_norm", 4096, 8192), _norm("layer_norm", 4096, 2048),
                    _elementwise("swiglu", 16384, 5632), _rotary(8, 16, 2048, 128),
                    _cross_entropy(16384, 2048, 32000), _cross_entropy(4096, 8192, 50304)]


def _skip_reason(impl: str) -> str | None:
    if impl == "triton" and not CUDA:
        return "Triton side not measurable on CPU: the interpreter is a Python loop, not a performance measure"
    if impl == "triton" and os.environ.get("TRITON_INTERPRET"):
        return "TRITON_INTERPRET is set: the Triton kernels would run in the interpreter"
    if impl == "compile" and not CUDA and not os.environ.get("KERNELS_BENCH_CPU_COMPILE"):
        return "torch.compile on CPU skipped (compile time would dominate); KERNELS_BENCH_CPU_COMPILE=1 runs it"
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_name() -> str:
    return torch.cuda.get_device_name(DEVICE) if CUDA else f"CPU {platform.processor() or platform.machine()}"


def _synchronize() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _peak_mb(step: Callable[[], None]) -> float | None:
    """Peak memory one forward+backward allocates beyond the live inputs, in MiB (CUDA only)."""
    if not CUDA:
        return None
    _synchronize()
    torch.cuda.reset_peak_memory_stats(DEVICE)
    baseline = torch.cuda.memory_allocated(DEVICE)
    step()
    _synchronize()
    return (torch.cuda.max_memory_allocated(DEVICE) - baseline) / 2 ** 20


@pytest.mark.parametrize("case", cases(), ids=lambda case: f"{case.kernel}[{case.shape.replace(' ', ',')}]")
@pytest.mark.parametrize("impl", IMPLS)
def test_forward_backward(benchmark, case: Case, impl: str) -> None:
    reason = _skip_reason(impl)
    if reason:
        pytest.skip(reason)
    kernel_set = get_kernel_set(impl)
    torch.manual_seed(0)
    inputs = case.make_inputs()
    differentiable = [t for t in inputs if t.requires_grad]
    first = case.call(kernel_set, inputs)
    grad_outputs = [torch.randn_like(o) for o in (first if isinstance(first, tuple) else (first,))]
    del first

    def clear_grads() -> None:
        for t in differentiable:
            t.grad = None

    def step() -> None:
        outputs = case.call(kernel_set, inputs)
        torch.autograd.backward(outputs if isinstance(outputs, tuple) else (outputs,), grad_outputs)
        _synchronize()

    for _ in range(2):  # compile (forward and backward) and autotune outside the timed rounds
        clear_grads()
        step()
    clear_grads()
    peak_mb = _peak_mb(step)
    benchmark.group = f"{case.kernel} {case.shape}"
    benchmark.extra_info.update(
        kernel=case.kernel, impl=impl, shape=case.shape, dtype=str(DTYPE).removeprefix("torch."),
        device=_device_name(), timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__, triton_version=_version("triton"), peak_mb=peak_mb)
    benchmark.pedantic(step, setup=clear_grads, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
