"""DeepSpeed's compiled ops: the first build is announced with its progress, and a lock left by a
killed build is refused before a study starts instead of hanging every trial."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from autoscale.cli import main
from autoscale.engine import ops
from autoscale.engine.request import TrialRequest
from autoscale.errors import UserError
from autoscale.models.presets import resolve_model
from autoscale.point import Point


def make_lock(root, *, age_s: float):
    folder = root / "py311_cpu" / "cpu_adam"
    folder.mkdir(parents=True)
    lock = folder / "lock"
    lock.touch()
    os.utime(lock, (time.time() - age_s, time.time() - age_s))
    return lock


def offload_request(workdir) -> TrialRequest:
    return TrialRequest(spec=resolve_model("gpt-tiny"), point=Point(zero_stage=2, offload="cpu"), seq_len=64,
                        workdir=workdir)


def test_a_lock_no_build_holds_is_refused_in_one_line_naming_it(tmp_path):
    lock = make_lock(tmp_path, age_s=600)
    with pytest.raises(UserError, match=f"{lock} was left by a DeepSpeed op build that is no longer running"):
        ops.check_build_locks(tmp_path)


def test_a_lock_of_a_build_just_started_or_still_compiling_is_not_stale(tmp_path):
    young = make_lock(tmp_path, age_s=1)
    assert ops.stale_build_locks(tmp_path) == []
    os.utime(young, (time.time() - 600, time.time() - 600))
    with subprocess.Popen(["sleep", "30"], cwd=young.parent) as compiler:
        try:
            assert ops.stale_build_locks(tmp_path) == []
        finally:
            compiler.kill()
    assert ops.stale_build_locks(tmp_path) == [young]


def test_tune_refuses_a_stale_lock_before_any_trial(tmp_path, monkeypatch, capsys):
    lock = make_lock(tmp_path / "ext", age_s=600)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--model", "gpt-tiny", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(lock) in err[0] and not (tmp_path / "runs").exists()


def stand_in_builds(monkeypatch, tmp_path, code: str) -> list[list[str]]:
    """Builds that run `code` instead of DeepSpeed's builder, into an empty cache; returns what ran."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(ops, "_ready", set())
    ran: list[list[str]] = []

    def command(op):
        ran.append(op.name)
        return [sys.executable, "-c", code]

    monkeypatch.setattr(ops.CompiledOp, "build_command", command)
    return ran


def test_the_ops_a_cpu_offload_trial_needs_are_built_once_and_announced_with_progress(tmp_path, monkeypatch):
    ran = stand_in_builds(monkeypatch, tmp_path, "import time; time.sleep(1.5)")
    monkeypatch.setattr(ops, "PROGRESS_EVERY_S", 0.5)
    said: list[str] = []
    assert ops.prepare_ops(offload_request(tmp_path), say=said.append) is None
    assert ran == ["deepspeed_shm_comm", "cpu_adam"]
    assert said[0].startswith("building DeepSpeed's shared-memory collectives op")
    assert any(line.startswith("building DeepSpeed's CPU Adam op") for line in said)
    assert any(line.startswith("still building DeepSpeed's cpu_adam op") for line in said)
    assert said[-1].startswith("DeepSpeed's cpu_adam op built")
    assert ops.prepare_ops(offload_request(tmp_path), say=said.append) is None and len(ran) == 2


def test_a_cached_op_needs_no_build_and_a_failed_build_fails_the_trial(tmp_path, monkeypatch):
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    for name in ("deepspeed_shm_comm", "cpu_adam"):
        (tmp_path / f"{python}_cpu" / name).mkdir(parents=True)
        (tmp_path / f"{python}_cpu" / name / f"{name}.so").touch()
    ran = stand_in_builds(monkeypatch, tmp_path, "pass")
    said: list[str] = []
    assert ops.prepare_ops(offload_request(tmp_path), say=said.append) is None and said == [] and ran == []
    (tmp_path / f"{python}_cpu" / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").unlink()
    stand_in_builds(monkeypatch, tmp_path, "raise SystemExit('no compiler')")  # the build an empty cache needs
    reason = ops.prepare_ops(offload_request(tmp_path), say=said.append)
    assert reason == "crash: DeepSpeed's deepspeed_shm_comm op could not be built: no compiler"
