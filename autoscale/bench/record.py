"""Bench records: the raw samples of one run with where, when and with what they were measured.

A baseline is a record saved to a file; every run's record also goes to the history folder. A record
keeps every sample (not only medians) because the statistics need both sides' spread, and it keeps
the hardware, driver, library versions and git commit so that a comparison across machines can be
refused and a regression can be pinned on a commit or an upgrade.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from autoscale.bench.load import HostLoad
from autoscale.errors import UserError
from autoscale.provenance import git_commit, utc_now, versions

FORMAT = "autoscale-bench/1"
HARDWARE_KEYS = ("backend", "name", "description", "device")  # must match for a comparison


@dataclass(frozen=True, kw_only=True)
class CaseSamples:
    """One config's (or one kernel benchmark's) samples per metric, and the reasons of failed repeats."""

    kind: str  # "trial" or "kernel"
    definition: dict
    samples: dict[str, list[float]]
    failures: list[str] = field(default_factory=list)  # repeats that failed every attempt
    flaky: list[str] = field(default_factory=list)  # failed attempts whose repeat then succeeded


@dataclass(frozen=True, kw_only=True)
class BenchRecord:
    suite: str
    created_at: str
    git_commit: str | None
    versions: dict[str, str]
    hardware: dict
    driver: dict
    cases: dict[str, CaseSamples]
    command: list[str] = field(default_factory=list)
    load: dict | None = None  # HostLoad.as_dict() of the run; None in records older than its recording
    nice: int | None = None  # the niceness the trials ran at (bench.priority); None in older records

    @property
    def failed_cases(self) -> dict[str, list[str]]:
        return {name: case.failures for name, case in self.cases.items() if case.failures}

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "BenchRecord":
        data = {k: v for k, v in data.items() if k != "format"}
        data["cases"] = {name: CaseSamples(**case) for name, case in data["cases"].items()}
        return cls(**data)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path


def load_record(path: Path | str, what: str = "baseline") -> BenchRecord:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} file {str(path)!r} does not exist (create it with --save-baseline)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{what} file {str(path)!r} is not JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{what} file {str(path)!r} is not an autoscale bench record ({FORMAT})")
    try:
        return BenchRecord.from_dict(data)
    except (KeyError, TypeError) as error:
        raise UserError(f"{what} file {str(path)!r} is missing fields: {error}") from None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


@lru_cache(maxsize=2)
def environment(backend: str) -> tuple[dict, dict]:
    """(hardware, driver) of this machine for `backend`: the comparison key and what to blame."""
    import torch

    from autoscale.hardware import detect

    hardware = detect(backend)
    if backend == "cuda":
        device, count = torch.cuda.get_device_name(0), torch.cuda.device_count()
    else:
        device, count = _cpu_model(), len(os.sched_getaffinity(0))
    found = {"backend": backend, "name": hardware.name, "description": hardware.description, "device": device,
             "device_count": count}
    driver = {"torch_cuda": torch.version.cuda, "cuda_driver": _nvidia_driver() if backend == "cuda" else None,
              "cudnn": torch.backends.cudnn.version() if backend == "cuda" else None}
    return found, driver


def new_record(suite: str, backend: str, cases: dict[str, CaseSamples], command: list[str], *,
               load: HostLoad | None = None, provenance: dict | None = None) -> BenchRecord:
    """`provenance` ({git_commit, versions}) when the samples came from another environment (A/B)."""
    hardware, driver = environment(backend)
    where = provenance or {"git_commit": git_commit(), "versions": versions()}
    return BenchRecord(suite=suite, created_at=utc_now(), git_commit=where["git_commit"],
                       versions=dict(where["versions"]), hardware=dict(hardware), driver=dict(driver), cases=cases,
                       command=list(command), load=load.as_dict() if load else None,
                       nice=os.getpriority(os.PRIO_PROCESS, 0))  # the trials inherit this thread's (bench.priority)


def hardware_differences(baseline: dict, current: dict) -> list[str]:
    return [f"{key}: baseline {baseline.get(key)!r}, here {current.get(key)!r}"
            for key in HARDWARE_KEYS if baseline.get(key) != current.get(key)]


def check_hardware(baseline: BenchRecord, current: dict, *, allow_mismatch: bool) -> list[str]:
    """Refuse a baseline measured elsewhere (UserError), unless allowed; returns the differences."""
    differences = hardware_differences(baseline.hardware, current)
    if differences and not allow_mismatch:
        raise UserError(f"baseline was measured on other hardware ({'; '.join(differences)}); "
                        "pass --allow-hardware-mismatch to compare anyway")
    return differences


def environment_changes(baseline: BenchRecord, candidate: BenchRecord) -> list[str]:
    """What changed since the baseline besides the code: commit, driver, library versions."""
    changes = []
    if baseline.git_commit != candidate.git_commit:
        changes.append(f"git commit {(baseline.git_commit or '?')[:10]} -> {(candidate.git_commit or '?')[:10]}")
    for group, old, new in (("driver", baseline.driver, candidate.driver),
                            ("version", baseline.versions, candidate.versions)):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changes.append(f"{group} {key} {old.get(key)} -> {new.get(key)}")
    if None not in (baseline.nice, candidate.nice) and baseline.nice != candidate.nice:
        changes.append(f"niceness of the trials {baseline.nice} -> {candidate.nice} (--nice)")
    return changes
