"""The history folder: one JSON file per bench run (its record and, when there was a baseline, the
comparison), which the trend page reads back. Files are never rewritten, so a folder restored from
CI caches or artifacts keeps growing run by run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from autoscale.bench.compare import AB, STORED, BenchComparison
from autoscale.bench.record import BenchRecord



@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    record: BenchRecord
    rows: list[dict]  # MetricRow.as_dict() of this run's comparison; empty without a baseline
    baseline: dict | None  # commit and time of the baseline compared against
    changes: list[str]  # commit, driver and version changes since that baseline
    path: Path
    mode: str = "stored baseline"  # or "A/B": the baseline side measured in the same job


def write_history(directory: Path, record: BenchRecord, comparison: BenchComparison | None,
                  baseline: BenchRecord | None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9T]", "", record.created_at.split("+")[0])
    path = directory / f"{stamp}-{record.suite}.json"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{stamp}-{record.suite}-{n}.json"
    data = {"record": record.to_dict(), "comparison": comparison.as_dict() if comparison else None,
            "baseline": {"git_commit": baseline.git_commit, "created_at": baseline.created_at} if baseline else None}
    if comparison is not None and comparison.mode == AB:  # the other side was measured now: keep its samples
        data["baseline_record"] = baseline.to_dict()
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def load_history(directory: Path, suite: str) -> list[HistoryEntry]:
    """The suite's runs in time order; unreadable or foreign files are skipped, not fatal."""
    entries = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            record = BenchRecord.from_dict(data["record"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.suite != suite:
            continue
        comparison = data.get("comparison") or {}
        entries.append(HistoryEntry(record=record, rows=comparison.get("rows", []), baseline=data.get("baseline"),
                                    changes=comparison.get("environment_changes", []), path=path,
                                    mode=comparison.get("mode", STORED)))
    return sorted(entries, key=lambda e: (e.record.created_at, e.path.name))
