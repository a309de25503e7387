"""Where a study's time goes: phases by the study's clock, trials' parts by their ranks' clock."""

import json

import pytest

from autoscale.engine.request import TrialPhases, TrialResult
from autoscale.timing import TRIAL_PARTS, StudyClock, TrialTiming, add_report_time

PHASES = TrialPhases(start_s=0.5, build_s=0.25, gate_s=1.0, warmup_s=0.0, timed_s=2.0)


def test_a_trial_s_finish_is_its_wall_time_past_the_parts_its_ranks_timed():
    parts = TrialTiming("trials", wall_s=4.0, phases=PHASES).parts()
    assert list(parts) == list(TRIAL_PARTS)
    assert parts["finish_s"] == pytest.approx(0.25) and sum(parts.values()) == pytest.approx(4.0)


def test_a_trial_whose_ranks_reported_nothing_is_all_finish():
    assert TrialTiming("trials", wall_s=3.0, phases=None).parts()["finish_s"] == 3.0


def test_each_trial_is_kept_under_the_phase_that_ran_it_and_the_pool_s_start_moves_out_of_it():
    clock = StudyClock()
    run = clock.runner(lambda request: TrialResult(status="ok", wall_s=4.0, phases=PHASES))
    with clock.phase("reference"):
        run(None)
    for _ in range(2):
        with clock.phase("trials"):
            run(None)
    timing = clock.as_dict(pool_start_s=clock.seconds["reference"])
    assert timing["trials"]["reference"]["count"] == 1 and timing["trials"]["trials"]["count"] == 2
    assert timing["trials"]["trials"]["gate_s"] == pytest.approx(2.0)
    assert timing["phases_s"]["reference"] == 0.0 and timing["phases_s"]["pool_start"] > 0
    assert sum(timing["phases_s"].values()) == pytest.approx(timing["total_s"])
    assert [t["phase"] for t in timing["per_trial"]] == ["reference", "trials", "trials"]


def test_phases_do_not_nest_and_have_known_names():
    clock = StudyClock()
    with pytest.raises(ValueError):
        with clock.phase("lunch"):
            pass
    with clock.phase("trials"), pytest.raises(RuntimeError):
        with clock.phase("summary"):
            pass


def test_a_result_s_phases_survive_the_study_s_storage():
    result = TrialResult(status="ok", tokens_per_s=1.0, phases=PHASES)
    assert TrialResult.from_dict(json.loads(json.dumps(result.as_dict()))) == result


def test_the_report_s_seconds_are_added_to_the_written_summary(tmp_path):
    clock = StudyClock()
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"timing": clock.as_dict()}))
    before = json.loads(path.read_text())["timing"]["total_s"]
    add_report_time(path, 1.5)
    timing = json.loads(path.read_text())["timing"]
    assert timing["phases_s"]["report"] == 1.5 and timing["total_s"] == pytest.approx(before + 1.5)
