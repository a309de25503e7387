"""The `compile` kernel set: `torch.compile` of each reference function.

`torch.compile` is called, and compiles, on a function's first call (Inductor needs a C++ compiler
on CPU, Triton on CUDA). If that fails, or any later recompile does, the function warns once and
runs the reference from then on, so a trial on a machine that can't compile still trains, with a
visible reason. A genuine error in the arguments then surfaces from the reference.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from autoscale.kernels import reference
from autoscale.kernels._dispatch import warn_fallback


def _compiled_or_reference(name: str) -> Callable:
    reference_fn = getattr(reference, name)
    compiled_fn: Callable | None = None
    failed = False

    @functools.wraps(reference_fn)
    def run(*args, **kwargs):
        nonlocal compiled_fn, failed
        if not failed:
            try:
                compiled_fn = compiled_fn or torch.compile(reference_fn)
                return compiled_fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any failure to compile means: use the reference
                failed = True
                lines = str(error).strip().splitlines()
                warn_fallback(f"compile/{name}", f"torch.compile failed ({type(error).__name__}: "
                                                 f"{lines[0][:200] if lines else 'no message'})")
        return reference_fn(*args, **kwargs)

    return run


def compiled_functions() -> dict[str, Callable]:
    """Each swappable function by name, compiled on first call (the registry makes them the `compile` set)."""
    from autoscale.kernels import FUNCTIONS

    return {name: _compiled_or_reference(name) for name in FUNCTIONS}
