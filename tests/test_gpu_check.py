"""ci/gpu_check.sh's own plumbing, on CPU: its arguments, the files it writes and their schema."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "ci" / "gpu_check.sh"


def report_module():
    spec = importlib.util.spec_from_file_location("gpu_check_report", REPO / "ci" / "gpu_check_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, out: Path, timeout_s: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def test_an_unknown_argument_is_refused_in_one_line_with_exit_2(tmp_path):
    finished = run_script("--gpus", out=tmp_path, timeout_s=30)
    assert finished.returncode == 2
    assert finished.stderr.strip() == "ci/gpu_check.sh: unknown argument '--gpus' (use --dry-run or --help)"
    assert list(tmp_path.iterdir()) == []


def test_a_record_missing_a_field_or_with_an_unknown_stage_status_fails_the_schema_check():
    report = report_module()
    record = {"schema": report.SCHEMA, "dry_run": True, "finished_at": "t", "host": "h", "versions": {},
              "gpu": None, "study": None, "overhead": None, "memory": None, "kernel_bench": None,
              "stages": [{"name": "study", "status": "maybe", "exit_code": 0, "seconds": 1.0, "note": ""}]}
    assert report.check(record) == ["stage study: status 'maybe'"]
    del record["memory"]
    record["gpu"] = 1
    assert report.check(record) == ["gpu: not str or NoneType", "memory: missing", "stage study: status 'maybe'"]


@pytest.mark.nightly  # 340 s, and its stages' time limits are sized for a GPU machine, not a loaded 2-core runner
@pytest.mark.slow
def test_the_dry_run_writes_the_json_the_markdown_and_the_logs_with_every_stage(tmp_path):
    finished = run_script("--dry-run", out=tmp_path, timeout_s=400)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-check-logs.tar.gz", "gpu-check.json", "gpu-check.md"]
    record = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report_module().check(record) == []
    statuses = {stage["name"]: stage["status"] for stage in record["stages"]}
    assert statuses == {"versions": "ok", "nvidia-smi": statuses["nvidia-smi"], "study": "ok", "overhead": "ok",
                        "memory": "ok", "kernel-bench": "skipped"}
    assert record["dry_run"] is True and record["study"]["best"] is not None
    assert {row["mode"] for row in record["overhead"]["rows"]} == {"warm", "fresh"}
    assert len(record["memory"]["rows"]) == 2 and all(row["status"] == "ok" for row in record["memory"]["rows"])
    assert "# GPU check (dry run on CPU" in (tmp_path / "gpu-check.md").read_text()
