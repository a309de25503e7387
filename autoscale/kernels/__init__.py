"""Kernels for LLM training: plain torch references (`kernels.reference`), fused Triton kernels (one file each),
and the registry of kernel sets the engine's `kernels` knob chooses from.

`from autoscale.kernels import rms_norm, layer_norm, swiglu, gelu, fused_linear_cross_entropy, apply_rotary` gives the
Triton versions. They load lazily on first access, so importing `kernels` needs no Triton and stays fast;
where Triton is missing they are the references, warning once that they fell back.

The functions share their names with the files that hold them (Liger-Kernel's layout). Python binds a
submodule onto its package when it is first imported, which would replace `kernels.rms_norm` the function
with `kernels.rms_norm` the module; the package's module class refuses that binding for these names, so
`from autoscale.kernels import rms_norm` is the function whatever was imported first. The modules stay reachable as
`importlib.import_module("autoscale.kernels.rms_norm")` and `from autoscale.kernels.rms_norm import RMSNormFunction`
(but `import kernels.rms_norm as m` binds the function).
"""

import importlib
import sys
import types

from autoscale.kernels.registry import KernelSet, get_kernel_set, kernel_set_names, register

FUNCTIONS = ("rms_norm", "layer_norm", "swiglu", "gelu", "apply_rotary", "fused_linear_cross_entropy")
_MODULE_OF = {name: "rotary" if name == "apply_rotary" else name for name in FUNCTIONS}

__all__ = ["KernelSet", "get_kernel_set", "kernel_set_names", "register", *FUNCTIONS]


def __getattr__(name: str):
    if name not in FUNCTIONS:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    from autoscale.kernels._dispatch import reference_only, triton_missing_reason

    if triton_missing_reason() is not None:
        function = reference_only(name)
    else:
        function = getattr(importlib.import_module(f"autoscale.kernels.{_MODULE_OF[name]}"), name)
    globals()[name] = function
    return function


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name in FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
