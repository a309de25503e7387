"""The trials' niceness: lowered for the run when the host allows it, inherited by what the run starts,
restored afterwards, refused in one line (and recorded) where it is not allowed."""

import os
import subprocess
import sys

import pytest

from autoscale.bench.priority import raised_priority
from autoscale.bench.record import BenchRecord, environment_changes
from autoscale.cli import main

CHILD_NICE = [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.skipif(not IS_ROOT, reason="lowering niceness needs root here")
def test_a_lowered_niceness_reaches_the_processes_started_inside_and_is_restored():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with raised_priority(-5) as priority:
        child = int(subprocess.run(CHILD_NICE, capture_output=True, text=True, check=True).stdout)
    assert priority.refused is None and priority.nice == before - 5 == child
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_an_adjustment_past_linux_range_is_clamped_and_zero_changes_nothing():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with raised_priority(0) as priority:
        assert priority.nice == before and priority.refused is None
    with raised_priority(+100) as priority:  # raising niceness is always allowed
        assert priority.nice == 19 == os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_without_the_right_to_lower_niceness_the_run_goes_on_and_says_why(monkeypatch):
    """The kernel's EPERM, as an unprivileged user without CAP_SYS_NICE gets it."""
    def refuse(which, who, value):
        raise PermissionError(1, "Operation not permitted")

    before = os.getpriority(os.PRIO_PROCESS, 0)
    monkeypatch.setattr(os, "setpriority", refuse)
    with raised_priority(-5) as priority:
        assert os.getpriority(os.PRIO_PROCESS, 0) == before
    assert priority.nice == before
    assert priority.refused == (f"niceness {before - 5} refused (Operation not permitted: lowering it needs root "
                                f"or CAP_SYS_NICE); the trials ran at niceness {before}")


def record(nice):
    return BenchRecord(suite="s", created_at="now", git_commit="abc", versions={}, hardware={}, driver={},
                       cases={}, nice=nice)


def test_the_record_keeps_the_niceness_and_a_comparison_names_a_change_of_it():
    assert BenchRecord.from_dict(record(-20).to_dict()).nice == -20
    assert environment_changes(record(0), record(-20)) == ["niceness of the trials 0 -> -20 (--nice)"]
    assert environment_changes(record(None), record(-20)) == []  # a record from before it was kept


def test_a_negative_nice_parses_as_a_value(tmp_path, capsys):
    """`--nice -5` is the flag's value, not an unknown option: the run gets as far as the suite."""
    code = main(["bench", "--suite", str(tmp_path / "missing.yaml"), "--nice", "-5"])
    assert code == 2
    assert "missing.yaml" in capsys.readouterr().err


@pytest.mark.skipif(not IS_ROOT, reason="lowering niceness needs root here")
def test_a_record_made_inside_the_block_carries_the_niceness_its_trials_ran_at():
    from autoscale.bench.record import new_record

    with raised_priority(-5) as priority:
        made = new_record("s", "cpu", {}, [])
    assert made.nice == priority.nice == new_record("s", "cpu", {}, []).nice - 5
