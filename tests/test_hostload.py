"""The host's load, read from /proc: a busy host is named before the study, and recorded."""

import pytest

from autoscale import hostload


def test_a_quiet_host_is_not_busy_and_a_host_using_half_its_cpu_is(tmp_path, monkeypatch):
    # fields: user nice system idle iowait irq softirq steal
    quiet = ["cpu 100 0 100 1000 0 0 0 0", "cpu 101 0 101 1198 0 0 0 0"]  # 2 of 200 ticks busy
    busy = ["cpu 100 0 100 1000 0 0 0 0", "cpu 150 0 150 1100 0 0 0 0"]  # 100 of 200 ticks busy
    for lines, expected in ((quiet, None), (busy, "other processes use 50%")):
        reads = iter(lines)
        monkeypatch.setattr(hostload, "_cpu_times", lambda proc: [int(v) for v in next(reads).split()[1:]])
        monkeypatch.setattr(hostload, "_load1", lambda proc: 0.5)
        load = hostload.sample(interval_s=0.0)
        reason = hostload.busy_reason(load)
        assert (reason is None) if expected is None else reason.startswith(expected)


def test_steal_time_alone_makes_a_host_busy(monkeypatch):
    reads = iter(["cpu 100 0 100 1000 0 0 0 0", "cpu 101 0 101 1178 0 0 0 20"])
    monkeypatch.setattr(hostload, "_cpu_times", lambda proc: [int(v) for v in next(reads).split()[1:]])
    load = hostload.sample(interval_s=0.0)
    assert load.steal_fraction == 0.1 and "steals 10%" in hostload.busy_reason(load)


def test_the_log_summarises_the_load_during_the_study():
    before = hostload.LoadSample(at="t0", load1=0.2, busy_fraction=0.01, steal_fraction=0.0)
    log = hostload.LoadLog(before)
    for load1 in (2.0, 3.0, 2.5):
        log.add(hostload.LoadSample(at="t", load1=load1, busy_fraction=1.0, steal_fraction=0.01))
    summary = log.as_dict()
    assert summary["busy_before"] is None and summary["during"]["load1"] == [2.0, 2.5, 3.0]
    assert summary["during"]["samples"] == 3 and summary["during"]["steal_fraction_max"] == 0.01


def test_without_proc_nothing_is_claimed(tmp_path):
    load = hostload.sample(interval_s=0.0, proc=tmp_path / "absent")
    assert load.load1 is None and load.busy_fraction is None and hostload.busy_reason(load) is None


def test_a_sample_after_a_trial_spans_the_trial_without_waiting(tmp_path):
    (tmp_path / "loadavg").write_text("1.50 1.00 0.50 1/100 1\n")
    (tmp_path / "stat").write_text("cpu 100 0 100 1000 0 0 0 0\n")
    log = hostload.LoadLog(hostload.sample(interval_s=0.0, proc=tmp_path), proc=tmp_path)
    (tmp_path / "stat").write_text("cpu 150 0 150 1080 0 0 0 20\n")  # the trial: 100 busy, 80 idle, 20 stolen
    log.add_now()
    assert log.during[-1].load1 == 1.5 and log.during[-1].steal_fraction == 0.1
    assert log.during[-1].busy_fraction == pytest.approx(0.6)
