"""End-to-end studies of gpt-tiny on 2 CPU ranks: files written, failures recorded, resume, repeats."""

import json

import pandas as pd
import pytest

from autoscale.engine import TrialRequest, run_trial
from autoscale.models import PRESETS
from autoscale.point import Point
from autoscale.session import TuneSession
from autoscale.tuner import tune
from autoscale.results import COLUMNS

pytestmark = pytest.mark.slow


def session(tmp_path, quick_measure, *, trials=3, space_text="zero_stage: [0, 1]\nmicro_batch: [4, 8]\n",
            resume=False, fault=None, timeout=120.0, numerics_gate=True) -> TuneSession:
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    made = TuneSession.from_flags(model="gpt-tiny", trials=trials, space=str(space), global_batch=16, seq_len=64,
                                  backend="cpu", nproc=2, out=tmp_path / "run", study_name="t",
                                  timeout_per_trial=timeout, storage=None, resume=resume, seed=0,
                                  command=["autoscale", "tune"], fault=fault, confirm_rounds=0)
    # few timed steps: tests check behaviour, benchmarks measure speed
    object.__setattr__(made.config, "measure", quick_measure)
    object.__setattr__(made.config, "numerics_gate", numerics_gate)
    return made


def test_a_study_writes_every_file_and_the_emitted_config_trains(tmp_path, quick_measure):
    s = session(tmp_path, quick_measure)
    outcome = s.run()
    s.finish(outcome)
    run = tmp_path / "run"
    assert {"ds_config.json", "trials.csv", "summary.json", "study.db"} <= {p.name for p in run.iterdir()}
    frame = pd.read_csv(run / "trials.csv")
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 3 and set(frame.status) == {"ok"}
    assert (frame.loss_gap.abs() < 1e-3).all() and frame.grad_norm0.notna().all()  # every trial passed the gate
    assert (run / "reference").is_dir()
    assert frame.is_baseline.sum() == 1  # ZeRO-0, micro-batch 1: measured even though outside this space
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["metrics"]["tokens_per_s"] == frame.tokens_per_s.max()
    assert summary["speedup"] == pytest.approx(frame.tokens_per_s.max() / frame[frame.is_baseline].tokens_per_s.iloc[0])
    assert set(summary["versions"]) >= {"torch", "deepspeed", "optuna"}
    assert summary["best"]["unconfirmed_because"].startswith("--confirm-rounds 0")
    timing = summary["timing"]  # the baseline's trial is the reference run, timed like any trial
    assert timing["trials"]["reference"]["count"] == 1 and timing["trials"]["trials"]["count"] == 2
    assert frame[frame.is_baseline].loss_gap.iloc[0] == 0.0 and frame[frame.is_baseline].steps.iloc[0] > 1
    assert timing["phases_s"]["report"] > 0 and timing["trials"]["trials"]["timed_s"] > 0

    config = json.loads((run / "ds_config.json").read_text())
    best = Point.from_dict(summary["best"]["point"])
    trained = run_trial(TrialRequest(spec=PRESETS["gpt-tiny"], point=best, seq_len=64, nproc=2,
                                     workdir=tmp_path / "check", measure=quick_measure, ds_config=config))
    assert trained.status == "ok", trained.reason


@pytest.mark.nightly
def test_crashing_and_hanging_trials_are_recorded_and_the_study_finishes(tmp_path, quick_measure):
    faults = iter(["crash", "hang", None])

    def faulty(request):
        fault = next(faults)
        return run_trial(request.__class__(**{**request.__dict__, "fault": fault, "timeout_s": 20.0}))

    s = session(tmp_path, quick_measure, space_text="zero_stage: [0, 1, 2]\nmicro_batch: [8]\n", numerics_gate=False)
    outcome = tune(s.config, info=s.info, run=faulty)
    statuses = [(r.status, r.reason.split(":")[0]) for r in outcome.records]
    assert statuses == [("failed", "crash"), ("failed", "timeout"), ("ok", "")]
    frame = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert list(frame.status) == ["failed", "failed", "ok"]


@pytest.mark.nightly
def test_a_resumed_study_keeps_its_earlier_trials(tmp_path, quick_measure):
    first = session(tmp_path, quick_measure, trials=2).run()
    again = session(tmp_path, quick_measure, trials=4, resume=True).run()
    earlier = {(r.number, r.point) for r in first.records}
    assert earlier <= {(r.number, r.point) for r in again.records}
    assert len(again.records) == 4
    assert len({r.point for r in again.records}) == 4  # nothing measured twice


@pytest.mark.nightly
def test_repeated_points_are_not_rerun_and_a_small_space_ends_early(tmp_path, quick_measure):
    ran = []

    def counting(request):
        ran.append(request.point)
        return run_trial(request)

    s = session(tmp_path, quick_measure, trials=10, space_text="zero_stage: [0, 1]\nmicro_batch: [8]\n",
                numerics_gate=False)
    outcome = tune(s.config, info=s.info, run=counting)
    assert len(ran) == len(set(ran)) == 3  # two points of the space and the baseline
    assert outcome.stopped_because == "every point of the space was measured"


@pytest.mark.nightly
def test_an_existing_study_is_not_silently_reused(tmp_path, quick_measure):
    from autoscale.errors import UserError

    session(tmp_path, quick_measure, trials=1).run()
    with pytest.raises(UserError, match="already exists.*--resume"):
        session(tmp_path, quick_measure, trials=1).run()
