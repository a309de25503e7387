"""Which backend a run uses (cpu, cuda, or model: the cost model alone) and its default rank count."""

from __future__ import annotations

import os

from autoscale.errors import UserError

BACKENDS = ("auto", "cpu", "cuda", "model")


def resolve_backend(backend: str) -> str:
    import torch

    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "model":
        return backend
    if backend == "auto":
        backend = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "cuda" and not torch.cuda.is_available():
        raise UserError("--backend cuda: no CUDA device is visible")
    if backend == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's config parser runs here too
    return backend


def default_nproc(backend: str) -> int:
    import torch

    return torch.cuda.device_count() if backend == "cuda" else 2
