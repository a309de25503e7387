"""Trial records and the files every consumer relies on: `trials.csv` and `summary.json`.

A `TrialRecord` is what the tuner stores in Optuna's user attributes, so the study itself is the
source of truth: the files are re-derived from it after every trial and survive a killed run.
Column and key names are documented in docs/run-folder.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from autoscale.budget import acceptable
from autoscale.engine.request import TrialResult
from autoscale.point import POINT_FIELDS, Point
from autoscale.provenance import git_commit, mask_password, utc_now, versions

if TYPE_CHECKING:
    import pandas as pd

KNOB_COLUMNS = POINT_FIELDS
METRIC_COLUMNS = tuple(f.name for f in fields(TrialResult)
                       if f.name not in ("status", "reason", "peak_bytes_per_rank", "phases"))
PREDICTED = "predicted"  # trials.csv's status of a plan's fitting point: predicted to run, never run
OWN_WORKLOAD = "autoscale"  # trials.csv's workload when trials ran autoscale's own training loop
COLUMNS = ("number", *KNOB_COLUMNS, *METRIC_COLUMNS, "status", "reason", "is_baseline",
           "pred_peak_bytes", "pred_tokens_per_s", "started_at", "finished_at", "workload")


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

    def row(self, *, predicted: bool = False) -> dict:
        """trials.csv's row. `predicted` (a plan): nothing ran, so a fitting point's status is
        `predicted` and its figures are only in the pred_* columns, never in the measured ones."""
        row = {"number": self.number, **self.point.as_dict()}
        metrics = self.result.as_dict() if self.result and not predicted else {}
        for column in METRIC_COLUMNS:
            row[column] = metrics.get(column) if self.status == "ok" or column == "wall_s" else None
        status = PREDICTED if predicted and self.status == "ok" else self.status
        row.update(status=status, reason=self.reason, is_baseline=self.is_baseline,
                   pred_peak_bytes=self.pred_peak_bytes, pred_tokens_per_s=self.pred_tokens_per_s,
                   started_at=self.started_at, finished_at=self.finished_at)
        return row

    def metrics(self) -> dict:
        return {k: v for k, v in self.row().items() if k in METRIC_COLUMNS}


def best_record(records: list[TrialRecord], usable_bytes: int | None,
                confirmation: dict | None = None) -> TrialRecord | None:
    """The confirmed winner (`autoscale.confirm`) where the winner was confirmed, else the fastest trial
    the tuner may recommend (`budget.acceptable`)."""
    if confirmation is not None:
        return next(r for r in records if r.number == confirmation["winner_trial_number"])
    feasible = [r for r in records if r.status == "ok" and acceptable(r.result, usable_bytes)]
    return max(feasible, key=lambda r: r.result.tokens_per_s, default=None)


def baseline_record(records: list[TrialRecord]) -> TrialRecord | None:
    return next((r for r in records if r.is_baseline and r.status == "ok"), None)


def trials_frame(records: list[TrialRecord], workload: str = OWN_WORKLOAD, *, predicted: bool = False) -> pd.DataFrame:
    """One row per record; `workload` is what every trial of the study trained (`workload_label`);
    `predicted`: the records are a plan's (`TrialRecord.row`)."""
    import pandas as pd  # here: `autoscale --help` needs no pandas
    return pd.DataFrame([{**r.row(predicted=predicted), "workload": workload} for r in records], columns=list(COLUMNS))


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_trials_csv(records: list[TrialRecord], path: Path, *, workload: str = OWN_WORKLOAD,
                     predicted: bool = False) -> None:
    """`workload`: what every trial trained (`workload_label`); `predicted`: a plan's records."""
    atomic_write_text(path, trials_frame(records, workload, predicted=predicted).to_csv(index=False))


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
    device_bytes_per_rank: int | None  # what one rank has (autoscale.budget)
    usable_bytes_per_rank: int | None  # what a config may fill: the limit trials are held to
    command: list[str]
    storage: str | None
    started_at: str
    memory_cap: dict | None = None  # CPU: the cap each rank ran under (`engine.memcap.memory_cap_record`)
    predicted: bool = False  # True for --backend model: every figure is the cost model's prediction
    evaluated: dict | None = None  # --backend model: how many points were predicted, fitting, pruned
    launcher_fallback: dict | None = None  # the warm launcher's CUDA start failed: what ran fresh instead
    host_load: dict | None = None  # `hostload.LoadLog.as_dict()`: how busy the host was before and during
    workload: dict | None = None  # `ScriptWorkload.describe()` when a user's script was measured; None: autoscale's loop
    timing: dict | None = None  # `timing.StudyClock.as_dict()`: where the study's time went
    versions: dict = field(default_factory=versions)
    git_commit: str | None = field(default_factory=git_commit)


def workload_label(info: RunInfo) -> str:
    """trials.csv's workload column: the script measured, or autoscale's own loop on its own model
    (`autoscale`) or on the Hugging Face model of the config (`transformers`, `--impl transformers`)."""
    if info.workload:
        return info.workload["script"]
    return "transformers" if info.model.get("impl") == "transformers" else OWN_WORKLOAD


def provenance(info: RunInfo) -> str:
    """One line every consumer can show: were these figures measured or predicted, by which study and commit."""
    how = "PREDICTED by the cost model, nothing was run" if info.predicted else "measured"
    return f"{how}; study {info.study_name!r}, autoscale commit {info.git_commit or 'unknown'}"


def _entry(record: TrialRecord | None) -> dict | None:
    if record is None:
        return None
    return {"trial_number": record.number, "point": record.point.as_dict(), "description": record.point.describe(),
            "metrics": record.metrics()}


def summary_dict(info: RunInfo, records: list[TrialRecord], confirmation: dict | None = None, *,
                 unconfirmed_because: str | None = None) -> dict:
    """`confirmation`: `Confirmation.as_dict()` of the winner's head-to-head rounds, when they ran; the
    speed-up is then its paired ratio to the baseline rather than one trial's over another's.
    `unconfirmed_because`: why a finished study named its winner without them."""
    best = best_record(records, info.usable_bytes_per_rank, confirmation)
    baseline = baseline_record(records)
    speedup = (best.result.tokens_per_s / baseline.result.tokens_per_s
               if best and baseline else None)
    if confirmation is not None and confirmation.get("vs_baseline"):
        speedup = confirmation["vs_baseline"]["centre"]
    counts = {status: sum(r.status == status for r in records) for status in ("ok", "failed", "pruned")}
    data = asdict(info)
    data["storage"] = mask_password(info.storage)
    data["command"] = [mask_password(arg) for arg in info.command]  # `--storage URL` is in the command line
    data.update(best=_entry(best), baseline=_entry(baseline), speedup=speedup, counts=counts,
                finished_at=utc_now(), provenance=provenance(info))
    if confirmation is not None:
        data["best"]["confirmation"] = confirmation
    if unconfirmed_because is not None and data["best"] is not None:
        data["best"]["unconfirmed_because"] = unconfirmed_because
    return data


def write_summary(info: RunInfo, records: list[TrialRecord], path: Path, confirmation: dict | None = None, *,
                  unconfirmed_because: str | None = None) -> dict:
    summary = summary_dict(info, records, confirmation, unconfirmed_because=unconfirmed_because)
    atomic_write_text(path, json.dumps(summary, indent=2, default=str) + "\n")
    return summary
