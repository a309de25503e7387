"""The probe a user's script calls, and how a script trial's result is read from what it left."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoscale import probe
from autoscale.engine.request import MeasurePolicy
from autoscale.engine.script import deepspeed_log_summary, probe_summary, script_failure_reason

POLICY = MeasurePolicy(warmup_steps=2)


def test_step_does_nothing_outside_a_trial(tmp_path, monkeypatch):
    monkeypatch.delenv(probe.PROBE_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    probe.step(tokens=128, loss=2.5)
    assert list(tmp_path.iterdir()) == []


def test_step_appends_one_record_per_call_to_its_rank_s_file(tmp_path, monkeypatch):
    monkeypatch.setenv(probe.PROBE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    probe.step(tokens=128, loss=2.5)
    probe.step(tokens=64)
    records = probe.read_records(probe.probe_path(tmp_path, 1))
    assert [r["tokens"] for r in records] == [128, 64]
    assert [r["loss"] for r in records] == [2.5, None]
    assert records[0]["t"] <= records[1]["t"]
    assert all(r["peak_bytes"] > 0 for r in records)


def test_a_record_cut_short_by_a_killed_rank_is_left_out(tmp_path):
    path = tmp_path / "probe.rank0.jsonl"
    path.write_text('{"t": 1.0, "time": 1.0, "tokens": 8, "loss": null, "peak_bytes": 5}\n{"t": 2.0, "tok')
    assert len(probe.read_records(path)) == 1


def test_the_probe_imports_neither_torch_nor_deepspeed():
    code = "import sys, autoscale.probe; print(sorted({'torch', 'deepspeed'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def records(times: list[float], *, tokens: int, peak: int) -> list[dict]:
    return [{"t": t, "time": 100.0 + t, "tokens": tokens, "loss": 3.0 - t, "peak_bytes": peak + i}
            for i, t in enumerate(times)]


def test_probe_summary_times_the_steps_after_warm_up_over_every_rank():
    rank0 = records([0.0, 5.0, 6.0, 7.0, 9.0], tokens=100, peak=1000)  # warm-up: the first two records
    rank1 = records([0.0, 5.0, 6.0, 8.0, 9.0], tokens=50, peak=2000)
    figures = probe_summary([rank0, rank1], POLICY, launch_time=99.0)
    assert figures["steps"] == 2  # rank 0's intervals 6->7, 7->9
    assert figures["step_s"] == pytest.approx(1.5)
    assert figures["tokens_per_s"] == pytest.approx(200 / 3 + 100 / 3)
    assert figures["peak_bytes_per_rank"] == (1004, 2004)
    assert figures["peak_bytes"] == 2004
    assert figures["loss"] == -6.0
    assert figures["launch_s"] == pytest.approx(1.0)


def test_probe_summary_needs_two_records_after_warm_up():
    assert probe_summary([records([0.0, 1.0, 2.0], tokens=1, peak=1)], POLICY, launch_time=0.0) is None


THROUGHPUT = ("[2026-11-30 21:11:45,024] [INFO] [timer.py:264:stop] epoch=0/micro_step={m}/global_step={g}, "
              "RunningAvgSamplesPerSec=500.0, CurrSamplesPerSec={s}, MemAllocated=0.47GB, MaxMemAllocated={p}GB")


def test_deepspeed_s_throughput_lines_give_tokens_per_s_after_warm_up():
    log = "\n".join(THROUGHPUT.format(m=2 * g, g=g, s=s, p=p) for g, s, p in
                    [(2, 1.0, 0.1), (3, 400.0, 0.5), (4, 200.0, 0.75), (5, 400.0, 0.5)])
    figures = deepspeed_log_summary(log, POLICY, global_batch=16, seq_len=64)
    assert figures["steps"] == 3  # global step 2 is warm-up
    assert figures["samples_per_s"] == pytest.approx(16 * 3 / (0.04 + 0.08 + 0.04))
    assert figures["tokens_per_s"] == pytest.approx(figures["samples_per_s"] * 64)
    assert figures["peak_bytes"] == int(0.75 * 1024**3)


def test_no_throughput_lines_is_no_summary():
    assert deepspeed_log_summary("nothing here\n", POLICY, global_batch=16, seq_len=64) is None


def test_the_failure_is_the_rank_that_exited_by_itself_with_its_last_log_line(tmp_path):
    (tmp_path / "rank0.log").write_text("training\n")
    (tmp_path / "rank1.log").write_text("step 3\nValueError: this script cannot run ZeRO-3\n\n")
    ended = [subprocess.Popen(["sleep", "60"]), subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(1)"])]
    ended[0].kill()  # as the launcher kills the rank left waiting on its dead peer
    for process in ended:
        process.wait()
    assert script_failure_reason(tmp_path, ended) == ("crash: rank1 exited with code 1: ValueError: this script "
                                                      "cannot run ZeRO-3")
