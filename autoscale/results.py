"""Trial records and the files every consumer relies on: `trials.csv` and `summary.json`.

A `TrialRecord` is what the tuner stores in Optuna's user attributes, so the study itself is the
source of truth: the files are re-derived from it after every trial and survive a killed run.
Column and key names are documented in docs/run-folder.md.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from autoscale.engine.request import TrialResult
from autoscale.point import Point

KNOB_COLUMNS = ("zero_stage", "micro_batch", "grad_accum", "precision", "checkpointing", "offload",
                "kernels", "tp", "pp")
METRIC_COLUMNS = ("tokens_per_s", "samples_per_s", "tflops_per_device", "mfu", "peak_bytes", "loss",
                  "steps", "step_s", "wall_s", "launch_s")
COLUMNS = ("number", *KNOB_COLUMNS, *METRIC_COLUMNS, "status", "reason", "is_baseline",
           "pred_peak_bytes", "pred_tokens_per_s", "started_at", "finished_at")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    number: int | None  # Optuna's trial number (None only for --backend model's predicted baseline)
    point: Point
    status: str  # ok, failed, pruned
    reason: str = ""
    result: TrialResult | None = None
    is_baseline: bool = False
    pred_peak_bytes: int | None = None
    pred_tokens_per_s: float | None = None
    started_at: str = ""
    finished_at: str = ""

    def to_attrs(self) -> dict:
        data = asdict(self)
        data["result"] = self.result.as_dict() if self.result else None
        return data

    @classmethod
    def from_attrs(cls, data: dict) -> "TrialRecord":
        data = dict(data)
        data["point"] = Point.from_dict(data["point"])
        data["result"] = TrialResult.from_dict(data["result"]) if data.get("result") else None
        return cls(**data)

    def row(self) -> dict:
        row = {"number": self.number, **{k: getattr(self.point, k) for k in KNOB_COLUMNS}}
        metrics = self.result.as_dict() if self.result else {}
        for column in METRIC_COLUMNS:
            row[column] = metrics.get(column) if self.status == "ok" or column == "wall_s" else None
        row.update(status=self.status, reason=self.reason, is_baseline=self.is_baseline,
                   pred_peak_bytes=self.pred_peak_bytes, pred_tokens_per_s=self.pred_tokens_per_s,
                   started_at=self.started_at, finished_at=self.finished_at)
        return row

    def metrics(self) -> dict:
        return {k: v for k, v in self.row().items() if k in METRIC_COLUMNS}


def best_record(records: list[TrialRecord], memory_limit_bytes: int | None) -> TrialRecord | None:
    """The fastest ok trial whose measured peak fits the device."""
    feasible = [r for r in records if r.status == "ok" and r.result is not None
                and (memory_limit_bytes is None or (r.result.peak_bytes or 0) <= memory_limit_bytes)]
    return max(feasible, key=lambda r: r.result.tokens_per_s, default=None)


def baseline_record(records: list[TrialRecord]) -> TrialRecord | None:
    return next((r for r in records if r.is_baseline and r.status == "ok"), None)


def trials_frame(records: list[TrialRecord]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in records], columns=list(COLUMNS))


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_trials_csv(records: list[TrialRecord], path: Path) -> None:
    atomic_write_text(path, trials_frame(records).to_csv(index=False))


_USER_AND_PASSWORD = re.compile(r"(?P<head>[\w+.-]*://[^:/@\s]*:)(?P<password>.*)@(?P<host>[^@]*)$", re.DOTALL)


def mask_password(url: str | None) -> str | None:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db

    The password runs to the *last* `@`: one typed unescaped (`p@ss`) is hidden whole, even though
    SQLAlchemy would split it there. Masking too much is harmless; too little leaks the secret.
    A URL inside other text (`--storage=postgresql://...`, an error message) is masked the same way.
    """
    if url is None:
        return None
    return _USER_AND_PASSWORD.sub(r"\g<head>***@\g<host>", url)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("autoscale", "torch", "deepspeed", "optuna", "triton"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def git_commit(directory: Path = Path(__file__).resolve().parent) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What summary.json says about the run besides its trials."""

    study_name: str
    model: dict
    backend: str
    world_size: int
    global_batch: int
    seq_len: int
    hardware: dict
    memory_limit_bytes: int | None
    command: list[str]
    storage: str | None
    started_at: str
    predicted: bool = False  # True for --backend model: every figure is the cost model's prediction
    evaluated: dict | None = None  # --backend model: how many points were predicted, fitting, pruned
    versions: dict = field(default_factory=versions)
    git_commit: str | None = field(default_factory=git_commit)


def _entry(record: TrialRecord | None) -> dict | None:
    if record is None:
        return None
    return {"trial_number": record.number, "point": record.point.as_dict(), "description": record.point.describe(),
            "metrics": record.metrics()}


def summary_dict(info: RunInfo, records: list[TrialRecord]) -> dict:
    best = best_record(records, info.memory_limit_bytes)
    baseline = baseline_record(records)
    speedup = (best.result.tokens_per_s / baseline.result.tokens_per_s
               if best and baseline else None)
    counts = {status: sum(r.status == status for r in records) for status in ("ok", "failed", "pruned")}
    data = asdict(info)
    data["storage"] = mask_password(info.storage)
    data["command"] = [mask_password(arg) for arg in info.command]  # `--storage URL` is in the command line
    data.update(best=_entry(best), baseline=_entry(baseline), speedup=speedup, counts=counts,
                finished_at=utc_now())
    return data


def write_summary(info: RunInfo, records: list[TrialRecord], path: Path) -> dict:
    summary = summary_dict(info, records)
    atomic_write_text(path, json.dumps(summary, indent=2, default=str) + "\n")
    return summary
