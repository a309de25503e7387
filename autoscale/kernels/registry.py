"""Named kernel sets the engine's `kernels` knob chooses from.

A kernel set bundles one implementation of each swappable piece of the model; all share the
signatures of `kernels.reference`. A new set is a loader function plus one `register` line; loaders
run lazily so that a missing optional dependency only matters to the set that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class KernelSet:
    name: str
    rms_norm: Callable
    layer_norm: Callable
    swiglu: Callable
    gelu: Callable
    apply_rotary: Callable
    fused_linear_cross_entropy: Callable


_LOADERS: dict[str, Callable[[], KernelSet]] = {}
_LOADED: dict[str, KernelSet] = {}


def register(name: str, loader: Callable[[], KernelSet]) -> None:
    _LOADERS[name] = loader


def kernel_set_names() -> tuple[str, ...]:
    return tuple(_LOADERS)


def get_kernel_set(name: str) -> KernelSet:
    if name not in _LOADERS:
        raise KeyError(f"unknown kernel set {name!r}; known: {', '.join(_LOADERS)}")
    if name not in _LOADED:
        _LOADED[name] = _LOADERS[name]()
    return _LOADED[name]


def _load_torch() -> KernelSet:
    from autoscale.kernels import reference

    return KernelSet(name="torch", rms_norm=reference.rms_norm, layer_norm=reference.layer_norm,
                     swiglu=reference.swiglu, gelu=reference.gelu,
                     apply_rotary=reference.apply_rotary,
                     fused_linear_cross_entropy=reference.fused_linear_cross_entropy)


def _load_triton() -> KernelSet:
    import autoscale.kernels as kernels

    return KernelSet(name="triton", **{name: getattr(kernels, name) for name in kernels.FUNCTIONS})


def _load_compile() -> KernelSet:
    from autoscale.kernels.compiled import compiled_functions

    return KernelSet(name="compile", **compiled_functions())


register("torch", _load_torch)
register("triton", _load_triton)
register("compile", _load_compile)
