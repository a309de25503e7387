"""Faults a real cluster throws at a tuning run: the tuner killed mid-trial, workers sharing a study.

These run `autoscale` as real processes and kill them with SIGKILL; the study must keep every
finished trial, mark the interrupted one failed (Optuna's heartbeat), count nothing twice and
leave no rank process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest

from autoscale.study import INTERRUPTED, HEARTBEAT_S

pytestmark = pytest.mark.slow
SPACE = "zero_stage: [0, 1, 2]\nmicro_batch: [4, 8]\n"


def autoscale(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "autoscale.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def rank_processes_under(folder: Path) -> list[psutil.Process]:
    marker = str(folder)
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "autoscale.engine.rank" in cmdline and marker in cmdline:
            found.append(process)
    return found


def trial_in_flight(run: Path) -> Path | None:
    """A trial folder whose ranks are training and have not written a result yet."""
    for marker in sorted(run.glob("**/trials/*/training-started")):
        if not (marker.parent / "result.json").exists():
            return marker.parent
    return None


@pytest.mark.nightly
def test_a_tuner_killed_mid_trial_resumes_without_losing_or_double_counting(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    args = ["tune", "--model", "gpt-tiny", "--space", "space.yaml", "--global-batch", "16", "--seq-len", "64",
            "--backend", "cpu", "--study-name", "killed", "--trials", "4", "--confirm-rounds", "0"]
    run = tmp_path / "runs" / "killed"
    tuner = autoscale(*args, cwd=tmp_path)
    wait_for(lambda: (run / "trials.csv").exists() and (run / "trials" / "1" / "training-started").exists(),
             600, "the second trial to start training")
    finished_before = pd.read_csv(run / "trials.csv", keep_default_na=False)
    os.killpg(tuner.pid, signal.SIGKILL)
    tuner.wait()
    wait_for(lambda: not rank_processes_under(run), 10, "the killed tuner's ranks to die with it")

    time.sleep(4 * HEARTBEAT_S + 1)  # past Optuna's grace period: the interrupted trial is stale
    resumed = autoscale(*args, "--resume", cwd=tmp_path)
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output

    frame = pd.read_csv(run / "trials.csv", keep_default_na=False)
    before = set(zip(finished_before.number.astype(str), finished_before.status))
    assert before <= set(zip(frame.number.astype(str), frame.status))  # every finished trial is still there
    interrupted = frame[frame.reason == INTERRUPTED]
    assert len(interrupted) == 1 and interrupted.status.iloc[0] == "failed"
    launched = frame[frame.reason != INTERRUPTED]
    assert len(launched) == 4  # the budget, with the interrupted trial not counted
    knobs = ["zero_stage", "micro_batch", "grad_accum"]
    assert not launched.duplicated(knobs).any()  # no point measured twice
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{run / 'study.db'}")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


@pytest.mark.postgres
def test_three_workers_share_a_postgres_study_and_one_dies(tmp_path):
    url = os.environ.get("AUTOSCALE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set AUTOSCALE_TEST_POSTGRES_URL (.ci/run starts PostgreSQL and sets it)")
    name = f"workers-{os.getpid()}-{int(time.time())}"
    (tmp_path / "space.yaml").write_text(SPACE)
    first = autoscale("tune", "--model", "gpt-tiny", "--space", "space.yaml", "--global-batch", "16", "--seq-len", "64",
                      "--backend", "cpu", "--nproc", "2", "--study-name", name, "--trials", "6", "--storage", url,
                      "--out", str(tmp_path / "first"), "--confirm-rounds", "0", cwd=tmp_path)
    storage = optuna.storages.RDBStorage(url)
    wait_for(lambda: name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)},
             60, "the study to be created")
    doomed = autoscale("worker", "--storage", url, "--study-name", name, "--out", str(tmp_path / "doomed"), cwd=tmp_path)
    survivor = autoscale("worker", "--storage", url, "--study-name", name, "--out", str(tmp_path / "survivor"),
                         cwd=tmp_path)
    wait_for(lambda: trial_in_flight(tmp_path / "doomed") is not None, 600, "the doomed worker to be mid-trial")
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    wait_for(lambda: not rank_processes_under(tmp_path / "doomed"), 10, "the dead worker's ranks to die")
    for process in (first, survivor):
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output

    time.sleep(4 * HEARTBEAT_S + 1)
    # a last worker finds the dead one's trial stale: Optuna fails it and the retry is measured
    last = autoscale("worker", "--storage", url, "--study-name", name, "--out", str(tmp_path / "last"), cwd=tmp_path)
    output, _ = last.communicate(timeout=400)
    assert last.returncode == 0, output

    study = optuna.load_study(study_name=name, storage=url)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states  # nothing lost in flight
    frame = pd.read_csv(tmp_path / "last" / "trials.csv", keep_default_na=False)
    assert set(frame.status) <= {"ok", "failed"}
    assert (frame[frame.status == "failed"].reason.str.len() > 0).all()  # failed with a reason
    launched = frame[frame.reason != INTERRUPTED]
    assert not launched.duplicated(["zero_stage", "micro_batch", "grad_accum"]).any()  # none duplicated
    assert len(launched) >= 6 and (frame.reason == INTERRUPTED).sum() == 1, frame.to_string()
