"""When a fused kernel cannot serve a call, and how its fallback to the torch reference says so.

Imports no Triton, so `kernels` stays importable (and fast to import) where Triton is missing. A
fallback never changes results silently: it warns once per (kernel, reason) with
`KernelFallbackWarning`, then runs the reference from `kernels.reference`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from typing import Callable, Sequence

import torch

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_WARNED: set[tuple[str, str]] = set()


class KernelFallbackWarning(UserWarning):
    """A fused kernel handed a call to the torch reference; the message says which and why."""


def warn_fallback(kernel: str, reason: str) -> None:
    if (kernel, reason) in _WARNED:
        return
    _WARNED.add((kernel, reason))
    warnings.warn(f"kernels: {kernel} falls back to the torch reference: {reason}",
                  KernelFallbackWarning, stacklevel=3)


def reset_fallback_warnings() -> None:
    """Forget which fallbacks have warned (for tests)."""
    _WARNED.clear()


@functools.cache
def triton_missing_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    return None


def unsupported_reason(tensors: Sequence[torch.Tensor | None], *, interpreted: bool,
                       dtypes: Sequence[torch.dtype] = SUPPORTED_DTYPES) -> str | None:
    """Why these tensors can't go to a Triton kernel built with (or without) the interpreter; None if they can.

    `interpreted` is whether the kernel module was imported with TRITON_INTERPRET=1: such kernels
    run on CPU tensors only, compiled ones on CUDA tensors only.
    """
    present = [t for t in tensors if t is not None]
    devices = {t.device for t in present}
    if len(devices) > 1:
        return f"tensors on several devices ({', '.join(sorted(str(d) for d in devices))})"
    device = present[0].device
    if device.type == "cuda" and interpreted:
        return "CUDA tensors, but the kernels were built for the interpreter (TRITON_INTERPRET=1)"
    if device.type == "cpu" and not interpreted:
        return "CPU tensors and TRITON_INTERPRET is not set" + (
            " (set it before the kernels are first used)" if os.environ.get("TRITON_INTERPRET") else "")
    if device.type not in ("cpu", "cuda"):
        return f"device type {device.type!r} is not supported"
    for t in present:
        if t.is_floating_point() and t.dtype not in dtypes:
            return f"dtype {t.dtype} is not supported"
    return None


def reference_only(name: str) -> Callable:
    """The reference for `name`, warning once that the fused kernel is unavailable (Triton missing)."""
    from autoscale.kernels import reference

    reference_fn = getattr(reference, name)

    @functools.wraps(reference_fn)
    def fallback(*args, **kwargs):
        warn_fallback(name, triton_missing_reason() or "the Triton kernel is unavailable")
        return reference_fn(*args, **kwargs)

    return fallback
