"""Search strategies and the replay benchmark: pure, fast, on hand-made tables and a stand-in cost model."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import pytest

from autoscale.engine.request import TrialResult
from autoscale.errors import UserError
from autoscale.hardware import get_hardware
from autoscale.models.presets import resolve_model
from autoscale.point import KNOB_NAMES as KNOBS, Point, baseline_point
from autoscale.space import SearchSpace
from autoscale.strategies import STRATEGIES, SearchContext, make_strategy
from autoscale.strategies.ask_tell import AskTellStrategy
from autoscale.strategies.ours import SEED_POINTS
from autoscale.strategies.replay import (ReplayTable, goals, load_table, summarize, trials_to_near_best,
                                         write_table)
from autoscale.strategies.synthetic import synthetic_table

GLOBAL_BATCH, WORLD_SIZE = 8, 2
SMALL = SearchSpace("small", {**{k: (v,) for k, v in (("checkpointing", "none"), ("kernels", "torch"), ("tp", 1),
                                                       ("pp", 1))},
                              "zero_stage": (0, 1), "micro_batch": (1, 2, 4), "precision": ("fp32", "bf16"),
                              "offload": ("none", "cpu")})


@dataclass(frozen=True)
class StandInPrediction:
    """What strategies read of a cost-model prediction, with values the test chooses."""

    fits: bool
    tokens_per_s: float
    peak_bytes: int
    borderline: bool = False  # past the margin by less than the model's error (Prediction.borderline)

    def pruned_reason(self) -> str:
        return "pruned: predicted not to fit (stand-in)"


def stand_in_predictor(point: Point) -> StandInPrediction:
    """Bigger micro-batches and bf16 predicted faster; micro-batch 4 in fp32 without offload predicted not to fit."""
    speed = point.micro_batch * (2 if point.precision == "bf16" else 1) + 0.1 * point.zero_stage
    fits = not (point.micro_batch == 4 and point.precision == "fp32" and point.offload == "none")
    return StandInPrediction(fits=fits, tokens_per_s=speed, peak_bytes=2**30 if fits else 2**40)


def context(space: SearchSpace = SMALL) -> SearchContext:
    return SearchContext(space=space, global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE,
                         predictor=stand_in_predictor, usable_bytes=2**31)


def measured(tokens_per_s: float) -> TrialResult:
    return TrialResult(status="ok", tokens_per_s=tokens_per_s, peak_bytes=2**29)


def outcome(point: Point) -> TrialResult:
    """A table unlike the stand-in model, with failures, so learning strategies see all kinds of outcome."""
    if point.offload == "cpu" and point.micro_batch == 1:
        return TrialResult.failed("oom: made up")
    return measured(1000.0 / point.micro_batch + 10 * point.zero_stage + (5 if point.precision == "bf16" else 0))


def table_of(space: SearchSpace, results: dict[tuple, TrialResult]) -> ReplayTable:
    return ReplayTable(name="hand-made", synthetic=False, spec=resolve_model("gpt-tiny"),
                       hardware=get_hardware("a100-40gb"), world_size=WORLD_SIZE, seq_len=128,
                       global_batch=GLOBAL_BATCH, space=space, results=results)


def run_to_the_end(name: str) -> list[Point]:
    """Every proposal until the strategy has none left; Optuna's samplers get a short repeat budget, so
    the end of a run (mostly repeats) takes a few asks rather than the tuner's many."""
    cls = STRATEGIES[name]
    options = {"max_repeats": 3} if issubclass(cls, AskTellStrategy) else {}
    strategy = cls(context(), seed=3, **options)
    proposed = []
    while (point := strategy.propose()) is not None:
        assert point.key() not in strategy.results, f"{name} re-proposed measured {point.short()}"
        proposed.append(point)
        strategy.tell(point, outcome(point))
    return proposed


def available(name: str) -> bool:
    return name != "ds-model-based" or importlib.util.find_spec("xgboost") is not None


STRATEGY_NAMES = [pytest.param(n, marks=pytest.mark.skipif(not available(n), reason="needs xgboost"))
                  for n in STRATEGIES]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_proposes_each_point_it_may_launch_exactly_once(name):
    proposed = run_to_the_end(name)
    points = SMALL.points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)
    launchable = [p for p in points if name != "autoscale" or stand_in_predictor(p).fits
                  or p == baseline_point(GLOBAL_BATCH, WORLD_SIZE)]
    assert sorted(p.key() for p in proposed) == sorted(p.key() for p in launchable)


def test_a_context_without_a_list_has_every_point_of_its_grid_as_candidates_in_grid_order():
    assert context().points() == SMALL.points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_no_strategy_proposes_a_point_it_was_told_about(name):
    strategy = make_strategy(name, context(), seed=0)
    told = set()
    for _ in range(6):
        point = strategy.propose()
        assert point.key() not in told
        told.add(point.key())
        strategy.tell(point, outcome(point))


def test_autoscale_measures_the_cost_models_top_points_then_the_baseline():
    strategy = make_strategy("autoscale", context(), seed=0)
    first = []
    for _ in range(1 + SEED_POINTS):
        first.append(strategy.propose())
        strategy.tell(first[-1], outcome(first[-1]))
    ranked = sorted((p for p in strategy.points if stand_in_predictor(p).fits),
                    key=lambda p: -stand_in_predictor(p).tokens_per_s)
    assert first[:SEED_POINTS] == ranked[:SEED_POINTS]
    assert first[SEED_POINTS] == baseline_point(GLOBAL_BATCH, WORLD_SIZE)


def test_autoscale_never_launches_a_point_predicted_not_to_fit():
    not_fitting = {p.key() for p in SMALL.points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)
                   if not stand_in_predictor(p).fits}
    assert not_fitting, "the stand-in model must rule some points out for this test to mean anything"
    assert not not_fitting & {p.key() for p in run_to_the_end("autoscale")}


def test_autoscale_risks_the_borderline_point_predicted_faster_than_all_that_fit_right_after_the_seeds():
    def predictor(point: Point) -> StandInPrediction:
        prediction = stand_in_predictor(point)
        if prediction.fits:
            return prediction
        return StandInPrediction(fits=False, tokens_per_s=100.0, peak_bytes=2**31 + 1, borderline=point.zero_stage == 1)

    risky = SearchContext(space=SMALL, global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE, predictor=predictor,
                          usable_bytes=2**31)
    strategy = make_strategy("autoscale", risky, seed=0)
    opening = []
    for _ in range(SEED_POINTS + 1):
        opening.append(strategy.propose())
        strategy.tell(opening[-1], outcome(opening[-1]))
    risked = opening[SEED_POINTS]
    assert not predictor(risked).fits and predictor(risked).borderline
    launched = list(opening)
    while (point := strategy.propose()) is not None:
        strategy.tell(point, outcome(point))
        launched.append(point)
    assert [p for p in launched if not predictor(p).fits] == [risked]  # the ZeRO-0 misfit, far past: pruned


def test_autoscale_without_a_cost_model_opens_with_the_baseline_and_prunes_nothing():
    strategy = make_strategy("autoscale", SearchContext(space=SMALL, global_batch=GLOBAL_BATCH,
                                                        world_size=WORLD_SIZE), seed=0)
    assert strategy.propose() == baseline_point(GLOBAL_BATCH, WORLD_SIZE)
    assert all(strategy.launchable(p) for p in strategy.points)


MICRO_ONLY = SearchSpace("micro", {**{k: SMALL.choices[k][:1] for k in KNOBS}, "micro_batch": (1, 2, 4)})


def test_replay_counts_trials_up_to_the_first_within_three_percent_of_the_best():
    points = MICRO_ONLY.points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)  # grid order: mb 1, 2, 4
    best = 1000.0
    results = {points[0].key(): TrialResult.failed("oom: made up"),
               points[1].key(): measured(0.98 * best), points[2].key(): measured(best)}
    assert trials_to_near_best(make_strategy("grid", context(MICRO_ONLY), seed=0), table_of(MICRO_ONLY, results)) == 2
    results[points[1].key()] = measured(0.96 * best)
    assert trials_to_near_best(make_strategy("grid", context(MICRO_ONLY), seed=0), table_of(MICRO_ONLY, results)) == 3


def test_a_faster_trial_past_the_memory_limit_is_not_the_target():
    """The tuner would not recommend a config that ran past its headroom (`best_record`), so the replay's
    best is the fastest acceptable trial: here mb 2, though mb 4 ran faster with a peak over the limit."""
    points = MICRO_ONLY.points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)  # grid order: mb 1, 2, 4
    table = table_of(MICRO_ONLY, {})
    too_big = TrialResult(status="ok", tokens_per_s=1000.0, peak_bytes=table.usable_bytes + 1)
    results = {points[0].key(): measured(500.0), points[1].key(): measured(800.0),
               points[2].key(): too_big}
    table = table_of(MICRO_ONLY, results)
    assert table.best_tokens_per_s() == 800.0 and not table.is_near_best(too_big)
    assert trials_to_near_best(make_strategy("grid", context(MICRO_ONLY), seed=0), table) == 2


def test_replay_counts_random_trials_by_its_own_order():
    points = MICRO_ONLY.points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)
    results = {p.key(): measured(100.0 * (i + 1)) for i, p in enumerate(points)}
    strategy = make_strategy("random", context(MICRO_ONLY), seed=5)
    expected = [p.key() for p in strategy.order].index(points[-1].key()) + 1
    assert trials_to_near_best(strategy, table_of(MICRO_ONLY, results)) == expected


def test_replay_says_never_when_the_best_is_predicted_not_to_fit():
    space = SearchSpace("pair", {**{k: SMALL.choices[k][:1] for k in KNOBS}, "micro_batch": (1, 4)})
    points = space.points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)  # mb 4 fp32: predicted not to fit
    results = {points[0].key(): measured(10.0), points[1].key(): measured(20.0)}
    assert trials_to_near_best(make_strategy("autoscale", context(space), seed=0), table_of(space, results)) is None


def test_summary_takes_quantiles_over_seeds_and_ratios_to_grid_and_random():
    rows = {r.strategy: r for r in summarize({"grid": [12, 12, 12], "random": [2, 4, 9], "autoscale": [1, 2, None]})}
    assert rows["random"].median == 4 and rows["random"].low == 2 and rows["random"].high == 9
    assert rows["autoscale"].median == 2 and rows["autoscale"].not_found == 1 and math.isinf(rows["autoscale"].p75)
    assert rows["autoscale"].vs_grid == pytest.approx(2 / 12) and rows["autoscale"].vs_random == pytest.approx(2 / 4)
    assert rows["autoscale"].mean == pytest.approx(1.5)
    assert [g.held for g in goals(list(rows.values()))] == [True, True]


def test_a_written_table_loads_back_with_its_outcomes_and_synthetic_mark(tmp_path):
    table, records, sidecar = synthetic_table(name="t", spec=resolve_model("gpt-tiny"),
                                              hardware=get_hardware("a100-40gb"), world_size=WORLD_SIZE, seq_len=128,
                                              global_batch=GLOBAL_BATCH, space=SMALL, backend="cuda")
    write_table(tmp_path / "t.csv", records, sidecar)
    loaded = load_table(tmp_path / "t.csv")
    assert loaded.synthetic and loaded.hardware == table.hardware and loaded.spec == table.spec
    assert {k: (r.status, r.tokens_per_s) for k, r in loaded.results.items()} == \
        {k: (r.status, r.tokens_per_s) for k, r in table.results.items()}


def test_a_table_missing_points_of_its_space_is_refused(tmp_path):
    _, records, sidecar = synthetic_table(name="t", spec=resolve_model("gpt-tiny"), hardware=get_hardware("a100-40gb"),
                                          world_size=WORLD_SIZE, seq_len=128, global_batch=GLOBAL_BATCH, space=SMALL,
                                          backend="cuda")
    write_table(tmp_path / "t.csv", records[1:], sidecar)
    with pytest.raises(UserError, match="lacks 1 point"):
        load_table(tmp_path / "t.csv")
