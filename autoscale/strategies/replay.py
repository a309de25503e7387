"""Replaying strategies against a table of measured trials: how many trials to a near-best config?

A table is a trials.csv-shaped CSV plus a JSON sidecar (`<table>.json`) saying what was measured
where: model, world size, sequence length, global batch, hardware, the space, and whether the
figures are synthetic. The space is a grid (the product of its choices: the table holds one row per
point) or a list (`"kind": "list"`: the table's rows are the space, as in a published sweep that
measured only some combinations; each row keeps its own grad_accum). Replaying a strategy feeds
it the table's outcome for each point it proposes instead of running a trial, so every strategy
is compared on the same measurements, and a seed's result is reproducible.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autoscale.budget import MemoryBudget, acceptable
from autoscale.costmodel import Predictor, point_predictor
from autoscale.engine.request import TrialResult
from autoscale.errors import UserError
from autoscale.hardware import Hardware, get_hardware
from autoscale.models.spec import ModelSpec
from autoscale.point import Point
from autoscale.point import KNOB_NAMES
from autoscale.results import TrialRecord, write_trials_csv
from autoscale.space import SearchSpace
from autoscale.strategies import STRATEGIES, SearchContext, Strategy, make_strategy
from autoscale.strategies.base import knob_values

NEAR_BEST = 0.03  # "near-best": within 3% of the table's best
SPACE_KINDS = ("grid", "list")


@dataclass(frozen=True, kw_only=True)
class ReplayTable:
    name: str
    synthetic: bool
    spec: ModelSpec
    hardware: Hardware
    world_size: int
    seq_len: int
    global_batch: int
    space: SearchSpace
    results: dict[tuple, TrialResult] = field(repr=False)
    warm_ranks: bool = False  # measured in children of warm fork servers (record_sweep --runner pool)
    listed: tuple[Point, ...] | None = None  # a list space's points; None: the grid of `space`

    def points(self) -> list[Point]:
        if self.listed is not None:
            return list(self.listed)
        return self.space.points(global_batch=self.global_batch, world_size=self.world_size)

    @property
    def usable_bytes(self) -> int:
        """Per rank, the limit `autoscale tune` holds a config to on this table's machine."""
        return MemoryBudget.for_hardware(self.hardware, self.world_size).usable_bytes

    def acceptable(self, result: TrialResult) -> bool:
        """A config the tuner could recommend (`budget.acceptable`): a trial that ran past the usable
        memory is no answer, however fast, so it is no target either."""
        return acceptable(result, self.usable_bytes)

    def best_tokens_per_s(self) -> float:
        usable = [r.tokens_per_s for r in self.results.values() if self.acceptable(r)]
        if not usable:
            raise UserError(f"table {self.name!r} has no ok trial within the memory limit: nothing to find")
        return max(usable)

    def is_near_best(self, result: TrialResult, tolerance: float = NEAR_BEST) -> bool:
        return self.acceptable(result) and result.tokens_per_s >= (1 - tolerance) * self.best_tokens_per_s()

    def context(self, predictor: Predictor | None = None) -> SearchContext:
        """What `autoscale tune` would know on this table's machine: the space and the cost model
        (`predictor`: another one, such as a fit that held this table's source out)."""
        predictor = predictor or point_predictor(self.spec, self.hardware, world_size=self.world_size,
                                                 seq_len=self.seq_len, warm_ranks=self.warm_ranks)
        return SearchContext(space=self.space, global_batch=self.global_batch, world_size=self.world_size,
                             predictor=predictor, usable_bytes=self.usable_bytes, listed=self.listed)


def sidecar_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".json")


def sidecar_dict(*, name: str, synthetic: bool, spec: ModelSpec, hardware: Hardware, world_size: int, seq_len: int,
                 global_batch: int, backend: str, space: SearchSpace, space_kind: str = "grid", **extra) -> dict:
    """The sidecar's keys; `space_kind` "list": the table's rows are the space; `extra` carries where
    and when (versions, timestamps, runner, notes)."""
    if space_kind not in SPACE_KINDS:
        raise ValueError(f"space kind {space_kind!r}: one of {SPACE_KINDS}")
    return {"name": name, "synthetic": synthetic, "model": spec.name, "model_spec": asdict(spec),
            "world_size": world_size, "seq_len": seq_len, "global_batch": global_batch, "backend": backend,
            "hardware_name": hardware.name, "hardware": asdict(hardware),
            "space": {"name": space.name, "kind": space_kind,
                      "choices": {k: list(v) for k, v in space.choices.items()}}, **extra}


def write_table(csv_path: Path, records: list[TrialRecord], sidecar: dict) -> None:
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_trials_csv(records, csv_path)
    sidecar_path(csv_path).write_text(json.dumps(sidecar, indent=2, default=str) + "\n")


def _value(raw):
    return None if raw is None or (isinstance(raw, float) and math.isnan(raw)) else raw


def rows_of(frame: pd.DataFrame) -> list[TrialRecord]:
    """The measured rows of a trials.csv-shaped frame as records (a pruned row was never measured)."""
    records, seen = [], set()
    for row in frame.to_dict("records"):
        point = Point.from_row(row)
        if point.key() in seen:
            raise UserError(f"point {point.short()} appears twice in the table")
        seen.add(point.key())
        status = str(row["status"])
        if status not in ("ok", "failed"):
            continue
        peak = _value(row.get("peak_bytes"))
        reason = str(_value(row.get("reason")) or "")
        result = TrialResult(status=status, reason=reason, tokens_per_s=_value(row.get("tokens_per_s")),
                             peak_bytes=int(peak) if peak is not None else None, step_s=_value(row.get("step_s")),
                             wall_s=float(_value(row.get("wall_s")) or 0.0))
        number = _value(row.get("number"))
        records.append(TrialRecord(number=int(number) if number is not None else None, point=point, status=status,
                                   reason=reason, result=result, is_baseline=bool(_value(row.get("is_baseline"))),
                                   started_at=str(_value(row.get("started_at")) or ""),
                                   finished_at=str(_value(row.get("finished_at")) or "")))
    return records


def _space_from_table(name: str, frame: pd.DataFrame) -> SearchSpace:
    """A sidecar without the space's choices: the table's distinct values, in ascending order."""
    return SearchSpace(name, {k: tuple(sorted(frame[k].dropna().unique().tolist())) for k in KNOB_NAMES
                              if k in frame.columns})


def list_space(name: str, points: list[Point]) -> SearchSpace:
    """The choices a define-by-run sampler suggests from in a list space: each knob's distinct values
    among the points, in ascending order."""
    return SearchSpace(name, {k: tuple(sorted({getattr(p, k) for p in points})) for k in KNOB_NAMES})


def _listed_points(csv_path: Path, records: list[TrialRecord]) -> tuple[Point, ...]:
    """A list space's candidates: the measured rows, each told apart from the others by its knobs."""
    points, seen = tuple(r.point for r in records), {}
    for point in points:
        earlier = seen.setdefault(knob_values(point.as_dict()), point)
        if earlier is not point:
            raise UserError(f"table {csv_path} lists {point.short()} and {earlier.short()}: rows of a list space "
                            "must differ in a knob")
    return points


def _hardware(sidecar: dict) -> Hardware:
    entry = sidecar.get("hardware")
    if isinstance(entry, dict):
        return Hardware(**{**entry, "match": tuple(entry.get("match", ()))})
    if isinstance(entry, str):  # a catalog name, as benchmarks/tune_vs_sweep.py records it
        return get_hardware(entry)
    return get_hardware(sidecar["hardware_name"])


def load_table(csv_path: Path) -> ReplayTable:
    from autoscale.models.presets import resolve_model

    csv_path = Path(csv_path)
    side = sidecar_path(csv_path)
    if not csv_path.is_file() or not side.is_file():
        raise UserError(f"a replay table needs {csv_path} and its sidecar {side}")
    sidecar = json.loads(side.read_text())
    frame = pd.read_csv(csv_path)
    records = rows_of(frame)
    spec = ModelSpec(**sidecar["model_spec"]) if "model_spec" in sidecar else resolve_model(sidecar["model"])
    kind = sidecar.get("space", {}).get("kind", "grid")
    if kind not in SPACE_KINDS:
        raise UserError(f"{side}: space kind {kind!r} is not one of {', '.join(SPACE_KINDS)}")
    listed = _listed_points(csv_path, records) if kind == "list" else None
    if listed is not None:
        space = list_space(sidecar["space"].get("name", csv_path.stem), list(listed))
    elif "space" in sidecar:
        space = SearchSpace(sidecar["space"]["name"], {k: tuple(v) for k, v in sidecar["space"]["choices"].items()})
    else:
        space = _space_from_table(csv_path.stem, frame)
    table = ReplayTable(name=sidecar.get("name", csv_path.stem), synthetic=bool(sidecar.get("synthetic", False)),
                        spec=spec, hardware=_hardware(sidecar), world_size=int(sidecar["world_size"]),
                        seq_len=int(sidecar["seq_len"]), global_batch=int(sidecar["global_batch"]), space=space,
                        results={r.point.key(): r.result for r in records},
                        warm_ranks=sidecar.get("runner") == "pool", listed=listed)
    missing = [p.short() for p in table.points() if p.key() not in table.results]
    if missing:
        raise UserError(f"table {csv_path} lacks {len(missing)} point(s) of its space, e.g. {missing[0]}: "
                        "a replay needs the whole space measured")
    return table


def trials_to_near_best(strategy: Strategy, table: ReplayTable, *, tolerance: float = NEAR_BEST) -> int | None:
    """Trials launched up to and including the first near-best one; None if the strategy never gets there."""
    seen: set[tuple] = set()
    while (point := strategy.propose()) is not None:
        key = point.key()
        if key in seen:
            raise RuntimeError(f"strategy {strategy.name!r} proposed {point.short()} twice")
        if key not in table.results:
            raise RuntimeError(f"strategy {strategy.name!r} proposed {point.short()}, which is not in the table")
        seen.add(key)
        result = table.results[key]
        strategy.tell(point, result)
        if table.is_near_best(result, tolerance):
            return len(seen)
    return None


def replay(table: ReplayTable, *, strategies: list[str] | None = None, seeds: range = range(20),
           tolerance: float = NEAR_BEST, predictor: Predictor | None = None) -> dict[str, list[int | None]]:
    context = table.context(predictor)
    return {name: [trials_to_near_best(make_strategy(name, context, seed=seed), table, tolerance=tolerance)
                   for seed in seeds]
            for name in (strategies or list(STRATEGIES))}


@dataclass(frozen=True)
class SummaryRow:
    strategy: str
    median: float
    p25: float
    p75: float
    low: float
    high: float
    mean: float  # over the seeds that found a near-best point
    not_found: int
    vs_grid: float | None
    vs_random: float | None


def _quantile(counts: list[float], q: float) -> float:
    """A quantile where "never found" (inf) may take part: inf when any interpolated neighbour is inf."""
    ordered = sorted(counts)
    position = q * (len(ordered) - 1)
    lower, upper = ordered[math.floor(position)], ordered[math.ceil(position)]
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return math.inf
    return float(lower + (upper - lower) * (position - math.floor(position)))


def summarize(counts: dict[str, list[int | None]]) -> list[SummaryRow]:
    values = {name: [math.inf if c is None else float(c) for c in found] for name, found in counts.items()}
    medians = {name: _quantile(v, 0.5) for name, v in values.items()}

    def ratio(name: str, reference: str) -> float | None:
        base = medians.get(reference)
        return medians[name] / base if base and math.isfinite(base) else None

    rows = []
    for name, v in values.items():
        finite = [c for c in v if math.isfinite(c)]
        rows.append(SummaryRow(strategy=name, median=medians[name], p25=_quantile(v, 0.25), p75=_quantile(v, 0.75),
                               low=min(v), high=max(v), mean=float(np.mean(finite)) if finite else math.inf,
                               not_found=len(v) - len(finite), vs_grid=ratio(name, "grid"),
                               vs_random=ratio(name, "random")))
    return rows


@dataclass(frozen=True)
class AcrossTables:
    """One strategy over several tables (the published sweeps): the median of its per-table medians,
    and how many seeds, over all tables, never reached a near-best point."""

    strategy: str
    median: float
    tables: int
    not_found: int
    seeds: int


def across_tables(per_table: list[list[SummaryRow]], *, seeds: int) -> list[AcrossTables]:
    by_strategy: dict[str, list[SummaryRow]] = {}
    for rows in per_table:
        for row in rows:
            by_strategy.setdefault(row.strategy, []).append(row)
    return [AcrossTables(strategy=name, median=_quantile([r.median for r in rows], 0.5), tables=len(rows),
                         not_found=sum(r.not_found for r in rows), seeds=seeds * len(rows))
            for name, rows in by_strategy.items()]


@dataclass(frozen=True)
class Goal:
    text: str
    held: bool | None  # None: a strategy it compares was not replayed


def goals(rows: list[SummaryRow], *, ours: str = "autoscale") -> list[Goal]:
    """The goal: ours needs at most a third of grid's trials and half of random's median."""
    by_name = {r.strategy: r for r in rows}
    mine = by_name.get(ours)

    def check(reference: str, fraction: float, label: str) -> Goal:
        other = by_name.get(reference)
        text = f"{ours} median <= {label} {reference}'s median"
        if mine is None or other is None:
            return Goal(text, None)
        return Goal(text, mine.median <= fraction * other.median)

    return [check("grid", 1 / 3, "1/3 of"), check("random", 1 / 2, "1/2 of")]
