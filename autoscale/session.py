"""From `autoscale tune`'s flags to a ready `TuneConfig`, and from the finished study to the run folder.

All defaults and all checks of user input live here, before any trial starts, so a mistake costs
one line and exit code 2, not a half-written run folder.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from autoscale.ds_config import to_ds_config, write_ds_config
from autoscale.errors import UserError
from autoscale.models import resolve_model
from autoscale.point import Point
from autoscale.results import RunInfo, utc_now
from autoscale.space import load_space
from autoscale.tuner import Observer, TuneConfig, TuneOutcome, tune

MEMORY_MARGIN = 0.9  # of the device's memory a config may use
MIN_FREE_DISK_BYTES = 50 * 2**20


def resolve_backend(backend: str) -> str:
    import torch

    if backend not in ("auto", "cpu", "cuda"):
        raise UserError(f"--backend must be auto, cpu or cuda, got {backend!r}")
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


def check_writable(out_dir: Path) -> None:
    """Fail before any trial if results could not be saved."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to --out {str(out_dir)!r}: {error.strerror or error}") from None
    free = shutil.disk_usage(out_dir).free
    if free < MIN_FREE_DISK_BYTES:
        raise UserError(f"--out {str(out_dir)!r}: only {free // 2**20} MiB free on its disk; "
                        f"need at least {MIN_FREE_DISK_BYTES // 2**20} MiB")


def memory_limit_per_rank(backend: str, nproc: int) -> int:
    from autoscale.hardware import detect

    hardware = detect(backend)
    per_rank = hardware.memory_bytes / nproc if backend == "cpu" else hardware.memory_bytes
    return int(per_rank * MEMORY_MARGIN)


@dataclass
class TuneSession:
    config: TuneConfig
    info: RunInfo

    @classmethod
    def from_flags(cls, *, model: str, trials: int, space: str, global_batch: int | None, seq_len: int | None,
                   backend: str, nproc: int | None, out: Path | None, study_name: str | None,
                   timeout_per_trial: float, storage: str | None, resume: bool, seed: int,
                   command: list[str], fault: str | None = None) -> "TuneSession":
        from autoscale.hardware import detect

        spec = resolve_model(model)
        search_space = load_space(space)
        backend = resolve_backend(backend)
        nproc = nproc or default_nproc(backend)
        if nproc < 1:
            raise UserError("--nproc must be at least 1")
        seq_len = seq_len or min(spec.max_seq_len, 1024)
        if seq_len > spec.max_seq_len:
            raise UserError(f"--seq-len {seq_len} exceeds {spec.name}'s maximum of {spec.max_seq_len}")
        global_batch = global_batch or 8 * nproc
        study_name = study_name or f"{spec.name}-{backend}"
        out_dir = out or Path("runs") / study_name
        check_writable(out_dir)
        hardware = detect(backend)
        limit = memory_limit_per_rank(backend, nproc)
        config = TuneConfig(spec=spec, space=search_space, global_batch=global_batch, seq_len=seq_len,
                            backend=backend, nproc=nproc, trials=trials, out_dir=out_dir, study_name=study_name,
                            storage=storage, resume=resume, seed=seed, timeout_per_trial_s=timeout_per_trial,
                            memory_limit_bytes=limit, fault=fault)
        info = RunInfo(study_name=study_name,
                       model={"name": spec.name, "params": spec.param_count(),
                              "train_flops_per_token": spec.train_flops_per_token(seq_len)},
                       backend=backend, world_size=nproc, global_batch=global_batch, seq_len=seq_len,
                       hardware={"name": hardware.name, "description": hardware.description,
                                 "memory_bytes": hardware.memory_bytes, "peak_tflops": hardware.peak_tflops},
                       memory_limit_bytes=limit, command=list(command), storage=config.storage_url,
                       started_at=utc_now())
        return cls(config, info)

    def headline(self) -> str:
        c = self.config
        return (f"tuning {c.spec.name} ({c.spec.param_count() / 1e6:,.1f}M params) on {c.nproc} {c.backend} "
                f"rank(s): global batch {c.global_batch} x {c.seq_len} tokens, {c.trials} trials, "
                f"space {c.space.name!r} -> {c.out_dir}")

    def run(self, observer: Observer | None = None) -> TuneOutcome:
        return tune(self.config, info=self.info, observer=observer)

    def finish(self, outcome: TuneOutcome) -> list[str]:
        """Write the best ds_config and the report; return what to tell the user."""
        lines = []
        best = outcome.summary["best"]
        if best is not None:
            point = Point.from_dict(best["point"])
            path = self.config.out_dir / "ds_config.json"
            write_ds_config(to_ds_config(point, world_size=self.config.nproc), path)
            lines.append(f"wrote {path}")
        lines.append(build_report_or_say_why(self.config.out_dir))
        return lines


def build_report_or_say_why(run_dir: Path) -> str:
    """The report is a convenience: its failure must not cost the measured results."""
    try:
        from reports.build import build_report
    except ImportError:
        return "report: the reports package is not available"
    try:
        return f"wrote {build_report(run_dir)}"
    except Exception as error:  # noqa: BLE001 - results are already saved; say what went wrong
        return f"report not written: {type(error).__name__}: {error}"
