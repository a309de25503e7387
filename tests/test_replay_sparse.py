"""List-space replay tables (a published sweep measured only some combinations) and their builder."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autoscale.costmodel.gpu_runs import PublishedRun, load_published_runs
from autoscale.engine.request import TrialResult
from autoscale.hardware import get_hardware
from autoscale.models.presets import resolve_model
from autoscale.point import Point
from autoscale.results import TrialRecord
from autoscale.space import SearchSpace
from autoscale.strategies import STRATEGIES, SearchContext, make_strategy
from autoscale.strategies.ask_tell import AskTellStrategy
from autoscale.strategies.replay import (ReplayTable, list_space, load_table, replay, sidecar_dict,
                                         trials_to_near_best, write_table)
from autoscale.strategies.synthetic import synthetic_table
from autoscale.study import POINT_ATTR
from benchmarks.published_sweeps import select_groups, sweep_groups, write_group_table

WORLD_SIZE, GLOBAL_BATCH = 12, 24
SPEC, HARDWARE = resolve_model("gpt-tiny"), get_hardware("a100-40gb")
LISTED = (  # a sweep over tp, pp and micro-batch that skipped most combinations
    Point(micro_batch=1, grad_accum=2, precision="bf16"),
    Point(micro_batch=2, grad_accum=2, precision="bf16", tp=2),
    Point(micro_batch=4, grad_accum=2, precision="bf16", tp=4, megatron_sp=True),
    Point(zero_stage=1, micro_batch=1, grad_accum=12, precision="bf16", tp=2, pp=3),
    Point(zero_stage=1, micro_batch=2, grad_accum=4, precision="fp16", pp=4),
    Point(micro_batch=4, grad_accum=1, precision="bf16"),  # global batch 48: its layout cannot make 24
)
TOKENS_PER_S = (100.0, 140.0, 90.0, 120.0, 60.0, 150.0)
SPACE = list_space("sweep", list(LISTED))


@dataclass(frozen=True)
class StandInPrediction:
    """What the autoscale strategy reads of a cost-model prediction: every point fits."""

    tokens_per_s: float
    peak_bytes: int = 2**30
    fits: bool = True
    borderline: bool = False


def listed_context(predictor=None) -> SearchContext:
    return SearchContext(space=SPACE, global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE, listed=LISTED,
                         predictor=predictor, usable_bytes=2**35)


def records() -> list[TrialRecord]:
    return [TrialRecord(number=i, point=p, status="ok", result=TrialResult(status="ok", tokens_per_s=t))
            for i, (p, t) in enumerate(zip(LISTED, TOKENS_PER_S))]


def write_listed_table(directory: Path) -> Path:
    path = directory / "sweep.csv"
    write_table(path, records(), sidecar_dict(name="sweep", synthetic=False, spec=SPEC, hardware=HARDWARE,
                                              world_size=WORLD_SIZE, seq_len=128, global_batch=GLOBAL_BATCH,
                                              backend="cuda", space=SPACE, space_kind="list"))
    return path


def available(name: str) -> bool:
    return name != "ds-model-based" or importlib.util.find_spec("xgboost") is not None


STRATEGY_NAMES = [pytest.param(n, marks=pytest.mark.skipif(not available(n), reason="needs xgboost"))
                  for n in STRATEGIES]


def test_a_list_table_loads_its_rows_as_the_only_candidates(tmp_path):
    table = load_table(write_listed_table(tmp_path))
    assert table.listed == LISTED and table.points() == list(LISTED)
    assert {k: r.tokens_per_s for k, r in table.results.items()} == \
        {p.key(): t for p, t in zip(LISTED, TOKENS_PER_S)}
    assert table.context().points() == list(LISTED)
    assert table.space.choices["tp"] == (1, 2, 4) and table.space.choices["precision"] == ("bf16", "fp16")


def test_a_list_table_whose_rows_share_their_knobs_is_refused(tmp_path):
    twin = TrialRecord(number=9, point=Point(micro_batch=1, grad_accum=4, precision="bf16"), status="ok",
                       result=TrialResult(status="ok", tokens_per_s=1.0))
    path = tmp_path / "twins.csv"
    write_table(path, records() + [twin], sidecar_dict(name="twins", synthetic=False, spec=SPEC, hardware=HARDWARE,
                                                       world_size=WORLD_SIZE, seq_len=128,
                                                       global_batch=GLOBAL_BATCH, backend="cuda", space=SPACE,
                                                       space_kind="list"))
    with pytest.raises(Exception, match="must differ in a knob"):
        load_table(path)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_proposes_each_listed_point_once_and_nothing_else(name):
    cls = STRATEGIES[name]
    options = {"max_repeats": 3} if issubclass(cls, AskTellStrategy) else {}
    strategy = cls(listed_context(), seed=1, **options)
    proposed = []
    while (point := strategy.propose()) is not None:
        assert point in LISTED, f"{name} proposed {point.short()}, which the list lacks"
        assert point not in proposed, f"{name} proposed {point.short()} twice"
        proposed.append(point)
        strategy.tell(point, TrialResult(status="ok", tokens_per_s=TOKENS_PER_S[LISTED.index(point)]))
    assert sorted(p.key() for p in proposed) == sorted(p.key() for p in LISTED)


def test_an_optuna_suggestion_the_list_lacks_is_pruned_without_a_point_and_asked_again():
    strategy = make_strategy("optuna-tpe", listed_context(), seed=0)
    for _ in range(len(LISTED)):
        point = strategy.propose()
        strategy.tell(point, TrialResult(status="ok", tokens_per_s=1.0))
    trials = strategy.study.get_trials(deepcopy=False)
    refused = [t for t in trials if POINT_ATTR not in t.user_attrs]
    assert refused and all(t.state == TrialState.PRUNED for t in refused)
    assert {Point.from_dict(t.user_attrs[POINT_ATTR]) for t in trials if POINT_ATTR in t.user_attrs} == set(LISTED)


def test_autoscale_opens_a_list_space_with_the_cost_models_fastest_listed_point():
    def predictor(point: Point) -> StandInPrediction:
        return StandInPrediction(tokens_per_s=float(point.tp * 10 + point.micro_batch))

    strategy = make_strategy("autoscale", listed_context(predictor), seed=0)
    assert strategy.propose() == max(LISTED, key=lambda p: predictor(p).tokens_per_s)


def test_a_grid_table_keeps_the_grid_of_its_space_and_replays_as_the_table_in_memory(tmp_path):
    space = SearchSpace("small", {"zero_stage": (0, 1), "micro_batch": (1, 2, 4), "precision": ("fp32", "bf16")})
    table, rows, sidecar = synthetic_table(name="grid", spec=SPEC, hardware=HARDWARE, world_size=2, seq_len=128,
                                           global_batch=8, space=space, backend="cuda")
    write_table(tmp_path / "grid.csv", rows, sidecar)
    loaded = load_table(tmp_path / "grid.csv")
    assert loaded.listed is None and sidecar["space"]["kind"] == "grid"
    assert loaded.points() == space.points(global_batch=8, world_size=2) == loaded.context().points()
    names = ["grid", "random", "optuna-tpe", "autoscale"]
    assert replay(loaded, strategies=names, seeds=range(3)) == replay(table, strategies=names, seeds=range(3))


def _run(sweep: str, point: Point, tokens_per_s: float, *, world_size: int = WORLD_SIZE) -> PublishedRun:
    knobs = {name: value for name, value in point.as_dict().items() if name != "grad_accum"}
    return PublishedRun(source="bloom", label=point.short(), spec=SPEC, hardware=HARDWARE, world_size=world_size,
                        seq_len=128, global_batch=point.global_batch(world_size), candidate_knobs=(knobs,),
                        measured_tokens_per_s_per_gpu=tokens_per_s, sweep=sweep)


def test_a_sweep_group_keeps_a_layout_that_cannot_make_its_batch_and_leaves_out_one_that_could():
    warm_up = Point(micro_batch=2, grad_accum=1, precision="bf16", tp=2)  # global batch 12, 24 was possible
    runs = [_run("s", p, t) for p, t in zip(LISTED, TOKENS_PER_S)] + [_run("s", warm_up, 5.0)]
    runs.append(_run("s", LISTED[0], 110.0))  # measured twice: one row at the median
    runs.append(_run("s", LISTED[0], 100.0, world_size=6))  # another world size: another group
    group = sweep_groups(runs)[0]
    assert (group.world_size, group.global_batch, group.rows) == (WORLD_SIZE, GLOBAL_BATCH, len(LISTED))
    assert [r.label for r in group.left_out] == [warm_up.short()]
    assert group.at_own_global_batch() == [LISTED[-1]]
    assert group.records()[0].result.tokens_per_s == 105.0


def test_the_builder_selects_groups_of_at_least_the_threshold_and_falls_back_saying_so():
    runs = [_run("big", p, t) for p, t in zip(LISTED, TOKENS_PER_S)] + \
           [_run("small", p, t) for p, t in zip(LISTED[:2], TOKENS_PER_S)]
    groups = sweep_groups(runs)
    assert [g.sweep for g in select_groups(groups, min_rows=6).groups] == ["big"]
    fallback = select_groups(groups, min_rows=8, fallback_min_rows=2)
    assert [g.sweep for g in fallback.groups] == ["big", "small"] and "no sweep group has >= 8" in fallback.note


GPU_DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "gpu"


def test_the_published_sweeps_become_list_tables_of_at_least_the_threshold_that_replay(tmp_path):
    selection = select_groups(sweep_groups(load_published_runs(GPU_DATA)))
    assert selection.groups and all(g.rows >= selection.min_rows for g in selection.groups)
    for group in selection.groups:
        table = load_table(write_group_table(group, tmp_path))
        assert len(table.points()) == group.rows and table.listed is not None
        for name in ("grid", "optuna-tpe"):
            assert trials_to_near_best(make_strategy(name, table.context(), seed=0), table) is not None


def test_a_replay_table_of_a_list_space_uses_it_in_memory_too():
    table = ReplayTable(name="sweep", synthetic=False, spec=SPEC, hardware=HARDWARE, world_size=WORLD_SIZE,
                        seq_len=128, global_batch=GLOBAL_BATCH, space=SPACE, listed=LISTED,
                        results={r.point.key(): r.result for r in records()})
    assert trials_to_near_best(make_strategy("grid", table.context(), seed=0), table) == len(LISTED)
