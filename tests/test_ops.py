"""DeepSpeed's compiled ops: the first build is announced with its progress, and a lock left by a
killed build is refused before a study starts instead of hanging every trial."""

from __future__ import annotations

import os
import subprocess
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


def test_building_the_cpu_adam_op_is_announced_with_its_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(ops, "_BUILD_CPU_ADAM", "import time; time.sleep(1.5)")
    monkeypatch.setattr(ops, "PROGRESS_EVERY_S", 0.5)
    monkeypatch.setattr(ops, "_ready_backends", set())
    request = offload_request(tmp_path)
    said: list[str] = []
    assert ops.prepare_optimizer_op(request, say=said.append) is None
    assert said[0].startswith("building DeepSpeed's CPU Adam op") and said[-1].startswith("DeepSpeed's CPU Adam op built")
    assert any(line.startswith("still building") for line in said[1:-1])


def test_a_cached_op_is_loaded_without_a_word(tmp_path, monkeypatch):
    (tmp_path / "py311_cpu" / "cpu_adam").mkdir(parents=True)
    (tmp_path / "py311_cpu" / "cpu_adam" / "cpu_adam.so").touch()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(ops, "_BUILD_CPU_ADAM", "pass")
    monkeypatch.setattr(ops, "_ready_backends", set())
    request = offload_request(tmp_path)
    said: list[str] = []
    assert ops.prepare_optimizer_op(request, say=said.append) is None and said == []
