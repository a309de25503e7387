"""What the tuner launches, in what order, and what it prunes, given the cost model: a stand-in engine
and model, no ranks.

A point predicted to fit is launched; one predicted past the memory margin is pruned without a
launch, except the baseline and `worth_the_risk`'s borderline points (predicted past the margin by
less than the model's memory error, and faster than everything predicted to fit).
"""

from dataclasses import dataclass

from autoscale.budget import MEMORY_MARGIN, MemoryBudget
from autoscale.costmodel import rank_predictions, worth_the_risk
from autoscale.engine.request import TrialResult
from autoscale.models import PRESETS
from autoscale.point import Point, baseline_point
from autoscale.results import RunInfo
from autoscale.space import SearchSpace
from autoscale.strategies.ours import opening_order
from autoscale.tuner import SilentObserver, TuneConfig, tune

LIMIT = 2**30
SPACE = SearchSpace("small", {"zero_stage": (0, 1), "micro_batch": (1, 2, 4), "precision": ("fp32", "bf16"),
                              "checkpointing": ("none",), "offload": ("none",), "kernels": ("torch",),
                              "tp": (1,), "pp": (1,)})


@dataclass(frozen=True)
class StandInTime:
    step_s: float


@dataclass(frozen=True)
class StandInPrediction:
    fits: bool
    borderline: bool
    tokens_per_s: float
    peak_bytes: int
    budget: MemoryBudget = MemoryBudget(int(LIMIT / MEMORY_MARGIN) + 1)  # usable: LIMIT
    step_s: float = 0.01

    @property
    def time(self) -> StandInTime:
        return StandInTime(self.step_s)

    def pruned_reason(self) -> str:
        return "pruned: predicted past the usable memory (stand-in)"

    def memory_verdict(self) -> str:
        return "fits" if self.fits else "predicted not to fit (stand-in)"


def predictor(point: Point) -> StandInPrediction:
    """Faster with bigger micro-batches and bf16 (best that fits: ZeRO-1, micro-batch 2, bf16, 4.1).
    Micro-batch 4 does not fit: in bf16 only just (borderline) and predicted faster than anything that
    fits; in fp32 by far with ZeRO-0, only just with ZeRO-1 but no faster than what fits."""
    speed = point.micro_batch * (2 if point.precision == "bf16" else 1) + 0.1 * point.zero_stage
    if point.micro_batch < 4:
        return StandInPrediction(fits=True, borderline=False, tokens_per_s=speed, peak_bytes=LIMIT // 2)
    borderline = point.precision == "bf16" or point.zero_stage == 1
    return StandInPrediction(fits=False, borderline=borderline, tokens_per_s=speed,
                             peak_bytes=LIMIT + (1 if borderline else LIMIT))


def engine(request) -> TrialResult:
    return TrialResult(status="ok", tokens_per_s=100.0 * request.point.micro_batch, peak_bytes=LIMIT // 2,
                       step_s=0.1, wall_s=1.0)


def points() -> list[Point]:
    return SPACE.points(global_batch=16, world_size=2)


def test_the_seeds_open_the_study_and_the_baseline_fits_in_any_budget():
    a, b, base = (Point(zero_stage=s, micro_batch=8, grad_accum=1) for s in (1, 2, 0))
    assert opening_order([a, b], base, budget_left=12) == [a, b, base]
    assert opening_order([a, b], base, budget_left=2) == [a, base, b]  # the baseline is still measured
    assert opening_order([a, b], base, budget_left=1) == [base, a, b]
    assert opening_order([a, base], base, budget_left=12) == [a, base]  # a seed that is the baseline: once
    assert opening_order([a, b], None, budget_left=12) == [a, b]


def test_the_risks_are_the_borderline_points_predicted_faster_than_all_that_fit_fastest_first():
    risked = worth_the_risk(rank_predictions(points(), predictor))
    assert [(p.zero_stage, p.micro_batch, p.precision) for p in risked] == [(1, 4, "bf16"), (0, 4, "bf16")]

    def slow_borderline(point: Point) -> StandInPrediction:
        prediction = predictor(point)
        return prediction if prediction.fits else StandInPrediction(False, prediction.borderline, 0.5, LIMIT + 1)

    assert worth_the_risk(rank_predictions(points(), slow_borderline)) == []


def config_and_info(tmp_path, trials: int, **overrides) -> tuple[TuneConfig, RunInfo]:
    spec = PRESETS["gpt-tiny"]
    config = TuneConfig(spec=spec, space=SPACE, global_batch=16, seq_len=64, backend="cpu", nproc=2,
                        trials=trials, out_dir=tmp_path / "run", study_name="t", usable_bytes_per_rank=LIMIT,
                        **{"numerics_gate": False, **overrides})  # a stand-in engine has no losses to compare
    info = RunInfo(study_name="t", model={"name": spec.name}, backend="cpu", world_size=2, global_batch=16,
                   seq_len=64, hardware={"name": "cpu"}, device_bytes_per_rank=None, usable_bytes_per_rank=LIMIT,
                   command=["autoscale", "tune"], storage=config.storage_url, started_at="2026-01-01T00:00:00+00:00")
    return config, info


def test_the_tuner_opens_with_the_first_risk_after_the_seeds_launches_every_risk_and_prunes_other_misfits(tmp_path):
    config, info = config_and_info(tmp_path, trials=len(points()))
    records = tune(config, info=info, run=engine, predictor=predictor).records
    risks = [p.key() for p in worth_the_risk(rank_predictions(points(), predictor))]
    assert [r.point.key() for r in records[2:4]] == [risks[0], baseline_point(16, 2).key()]
    misfits = {r.point.key(): r.status for r in records if not predictor(r.point).fits}
    assert misfits == {**{key: "ok" for key in risks},
                       **{key: "pruned" for key in misfits if key not in risks}} and len(misfits) == 4


def test_a_point_predicted_past_the_trial_timeout_is_pruned_with_its_predicted_time(tmp_path):
    def zero_stage_1_is_slow(point: Point) -> StandInPrediction:
        fast = predictor(point)
        return StandInPrediction(fast.fits, fast.borderline, fast.tokens_per_s, fast.peak_bytes,
                                 step_s=100.0 if point.zero_stage == 1 else 0.01)

    config, info = config_and_info(tmp_path, trials=len(points()), timeout_per_trial_s=60.0)
    records = tune(config, info=info, run=engine, predictor=zero_stage_1_is_slow).records
    slow = [r for r in records if r.point.zero_stage == 1]
    assert slow and all(r.status == "pruned" for r in slow)
    assert all(r.reason == "pruned: predicted to take 8.3 min for its 5 steps, past --timeout-per-trial 60 s"
               for r in slow)  # (2 warm-up + 3 timed) x 100 s
    assert any(r.status == "ok" and r.point.zero_stage == 0 for r in records)


def test_the_console_marks_a_launched_risk_and_not_a_pruned_point():
    from rich.progress import Progress

    from autoscale.commands.tune import ConsoleObserver
    from autoscale.results import TrialRecord

    observer = ConsoleObserver(3, Progress(), usable_bytes=LIMIT)
    point = points()[-1]
    risk = TrialRecord(number=2, point=point, status="failed", reason="oom: out of memory",
                       pred_peak_bytes=int(1.05 * LIMIT))
    assert observer.marks(risk) == "  (a risk: predicted 105% of the usable memory)"
    assert observer.marks(TrialRecord(number=5, point=point, status="pruned", pred_peak_bytes=2 * LIMIT)) == ""
    assert observer.marks(TrialRecord(number=0, point=baseline_point(16, 2), status="ok", is_baseline=True,
                                      pred_peak_bytes=LIMIT // 2)) == "  (baseline)"


class NoteTaker(SilentObserver):
    """Keeps the tuner's one-line notes (the console prints them)."""

    def __init__(self):
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_a_default_baseline_predicted_not_to_fit_gives_way_to_the_smallest_fitting_point(tmp_path):
    def default_too_big(point: Point) -> StandInPrediction:
        if point == baseline_point(16, 2):
            return StandInPrediction(fits=False, borderline=False, tokens_per_s=1.0, peak_bytes=3 * LIMIT)
        prediction = predictor(point)
        return StandInPrediction(prediction.fits, prediction.borderline, prediction.tokens_per_s,
                                 prediction.peak_bytes * point.micro_batch - point.zero_stage)  # smallest: z1 mb1

    observer = NoteTaker()

    config, info = config_and_info(tmp_path, trials=4)
    records = tune(config, info=info, run=engine, predictor=default_too_big, observer=observer).records
    baseline = [r for r in records if r.is_baseline]
    assert len(baseline) == 1 and baseline[0].status == "ok"
    assert (baseline[0].point.zero_stage, baseline[0].point.micro_batch) == (1, 1)  # fits, smallest predicted peak
    assert baseline_point(16, 2) not in {r.point for r in records}  # the default is never launched
    assert any("the smallest config predicted to fit" in note for note in observer.notes)


def test_nothing_predicted_to_fit_stops_before_the_study_with_the_figures_and_what_to_try(tmp_path):
    import pytest

    from autoscale.errors import UserError

    def nothing_fits(point: Point) -> StandInPrediction:
        return StandInPrediction(fits=False, borderline=False, tokens_per_s=1.0, peak_bytes=5 * LIMIT)

    config, info = config_and_info(tmp_path, trials=4)
    launched = []
    with pytest.raises(UserError, match=r"does not fit.*smallest predicted peak is 5\.0 GiB against.*--backend model"):
        tune(config, info=info, run=lambda request: launched.append(request), predictor=nothing_fits)
    assert not launched and not (tmp_path / "run" / "study.db").exists()


def test_ctrl_c_keeps_the_finished_trials_records_the_cut_one_as_interrupted_and_resume_measures_it(tmp_path):
    calls = []

    def interrupted_third(request):
        calls.append(request.point)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return engine(request)

    config, info = config_and_info(tmp_path, trials=5)
    outcome = tune(config, info=info, run=interrupted_third, predictor=predictor)
    assert outcome.interrupted and outcome.stopped_because == "interrupted after 2 trials; continue with --resume"
    assert [r.status for r in outcome.records] == ["ok", "ok", "failed"]
    assert outcome.records[2].reason.startswith("interrupted:") and outcome.summary["best"] is not None

    observer = NoteTaker()

    config, info = config_and_info(tmp_path, trials=5, resume=True)
    again = tune(config, info=info, run=engine, predictor=predictor, observer=observer)
    assert observer.notes[0] == ("resuming study 't': 2 trials measured (2 ok, 0 failed), 0 pruned, 1 interrupted "
                        "(measured again); continuing to 5 trials")
    measured = [r.point for r in again.records if r.status == "ok"]
    assert calls[2] in measured and len(measured) == len(set(measured)) == 5


def test_the_console_counts_pruned_and_repeated_points_instead_of_printing_them_and_numbers_trials_without_gaps():
    from rich.console import Console
    from rich.progress import Progress

    from autoscale.commands.tune import ConsoleObserver
    from autoscale.results import TrialRecord

    console = Console(record=True, width=200)
    observer = ConsoleObserver(3, Progress(console=console), usable_bytes=LIMIT)
    first, second = points()[:2]
    for number in (4, 5, 6):
        observer.repeat_skipped(number, first, 0)
    observer.trial_finished(TrialRecord(number=7, point=second, status="pruned", reason="pruned: x"), 1)
    observer.trial_finished(TrialRecord(number=9, point=second, status="ok", result=engine_result()), 2)
    text = console.export_text()
    assert "[2/3] trial #9" in text and "pruned" not in text and "repeat" not in text
    assert observer.settled_lines() == ["pruned 1 points predicted not to fit, never launched (reasons in trials.csv)",
                                        "skipped 3 suggestions of points already measured or being measured"]


def engine_result() -> TrialResult:
    return TrialResult(status="ok", tokens_per_s=100.0, peak_bytes=LIMIT // 2, step_s=0.1, wall_s=1.0)


def test_the_study_ends_by_confirming_the_winner_head_to_head_and_names_it_in_summary_and_ds_config(tmp_path):
    import json
    import random

    noise = random.Random(0)
    workdirs = []

    def noisy(request) -> TrialResult:  # micro-batch 2 in bf16 and fp32 run alike: only rounds can order them
        workdirs.append(request.workdir)
        speed = {1: 100.0, 2: 200.0}.get(request.point.micro_batch, 150.0) * noise.uniform(0.97, 1.03)
        return TrialResult(status="ok", tokens_per_s=speed, peak_bytes=LIMIT // 2, step_s=0.1, step_rse=0.02,
                           wall_s=1.0)

    config, info = config_and_info(tmp_path, trials=4, confirm_rounds=4)
    outcome = tune(config, info=info, run=noisy, predictor=predictor)  # seeds: micro-batch 2, ZeRO-1 and ZeRO-0
    confirmation = outcome.summary["best"]["confirmation"]
    contenders = confirmation["contenders"]
    assert confirmation["rounds"] == 4 and all(len(c["samples"]) == 4 for c in contenders)
    assert outcome.summary["best"]["trial_number"] == confirmation["winner_trial_number"] == contenders[0]["trial_number"]
    assert Point.from_dict(contenders[0]["point"]).micro_batch == 2
    assert 1.7 < outcome.summary["speedup"] < 2.3  # paired rounds against the baseline (micro-batch 1)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["best"]["confirmation"]["winner_trial_number"] == confirmation["winner_trial_number"]
    confirming = [w for w in workdirs if w.parent.name == "confirm"]
    assert len(confirming) == len(set(confirming)) == 4 * (len(contenders) + 1)  # and the baseline; own folders


def test_a_winner_named_without_confirmation_says_why_in_the_summary_and_to_the_observer(tmp_path):
    notes = []

    class Listening(SilentObserver):
        def note(self, text: str) -> None:
            notes.append(text)

    config, info = config_and_info(tmp_path / "off", trials=3, confirm_rounds=0)
    outcome = tune(config, info=info, run=lambda request: engine_result(), observer=Listening(), predictor=predictor)
    assert outcome.confirmation is None and outcome.unconfirmed_because.startswith("--confirm-rounds 0")
    assert outcome.summary["best"]["unconfirmed_because"] == outcome.unconfirmed_because
    assert any(note.startswith("the winner is named without confirmation") for note in notes)

    def one_succeeds(request) -> TrialResult:
        return engine_result() if request.point.micro_batch == 1 else TrialResult.failed("crash: x")

    config, info = config_and_info(tmp_path / "one", trials=3, confirm_rounds=3)
    outcome = tune(config, info=info, run=one_succeeds, predictor=predictor)
    assert outcome.unconfirmed_because.startswith("1 acceptable trial")


def test_the_band_s_note_says_who_joined_or_why_none_could_and_names_who_was_left_out():
    from autoscale.confirm import MAX_FINALISTS, Confirmation, Contender, NoiseBand
    from autoscale.tuner import band_notes

    band = NoiseBand(ratio=1.25, log_sd=0.08, configs=3, launches=6, measured_from="x")

    def confirmation(contenders: int, joined=(), left_out=()) -> Confirmation:
        return Confirmation(rounds=3, contenders=tuple(Contender(n, Point(), (1.0,), None) for n in range(contenders)),
                            baseline_number=None, vs_runner_up=None, vs_baseline=None, band=band, joined=joined,
                            left_out=left_out)

    assert band_notes(confirmation(3, joined=(2,)))[0].endswith("trial(s) #2 within it of the fastest joined")
    assert "25.0%" in band_notes(confirmation(2))[0] and band_notes(confirmation(2))[0].endswith("of the fastest")
    full = band_notes(confirmation(MAX_FINALISTS, left_out=(9,)))
    assert "could join" in full[0] and "#9" in full[1]
