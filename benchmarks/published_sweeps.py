"""Published layout sweeps as list-space replay tables, for `benchmarks/replay.py --published`.

A group is one of the cost model validation's sweeps (`PublishedRun.sweep`: runs of one model, GPU
type and precision family that differ in layout, as `benchmarks/validate_gpu.py` ranks them) on
one world size and sequence length, which a tuning run is given rather than searches. Its rows
are the runs whose layout the source prints in full (one candidate point). The group's global
batch is its rows' most common one; a row at another global batch is kept at its own only where
its layout cannot make the group's (BLOOM's pre-launch tables round the batch to the data-parallel
size), and otherwise left out as a different run rather than a different layout (a batch-size
warm-up). Runs of one point are merged at their median. The throughput is the measured tokens/s
per GPU; published runs are the ones that ran, so a table has no failures. The figures are other
people's published measurements (`SOURCES.md` beside the data), not ours.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from autoscale.costmodel import Predictor, point_predictor
from autoscale.costmodel.gpu_fit import family_of, fit_families, layout_refusal
from autoscale.costmodel.gpu_runs import PublishedRun
from autoscale.costmodel.params import GPU_DEFAULTS
from autoscale.engine.request import TrialResult
from autoscale.errors import RuleError
from autoscale.layout import grad_accum_for
from autoscale.point import Point
from autoscale.results import TrialRecord
from autoscale.strategies.replay import list_space, sidecar_dict, write_table

MIN_ROWS = 8
FALLBACK_MIN_ROWS = 5


@dataclass(frozen=True)
class SweepGroup:
    """One list-space table: a published sweep's runs on one world size and sequence length."""

    sweep: str
    world_size: int
    seq_len: int
    global_batch: int
    runs: tuple[PublishedRun, ...]
    left_out: tuple[PublishedRun, ...]  # at another global batch that their layout could have made

    @property
    def name(self) -> str:
        return f"{self.sweep} {self.world_size}g"

    def points(self) -> dict[tuple, tuple[Point, list[PublishedRun]]]:
        """Each distinct point with the runs that measured it."""
        by_key: dict[tuple, tuple[Point, list[PublishedRun]]] = {}
        for run in self.runs:
            point = run.candidates[0]
            by_key.setdefault(point.key(), (point, []))[1].append(run)
        return by_key

    @property
    def rows(self) -> int:
        return len(self.points())

    def at_own_global_batch(self) -> list[Point]:
        return [p for p, _ in self.points().values() if p.global_batch(self.world_size) != self.global_batch]

    def records(self) -> list[TrialRecord]:
        """One ok trial per point: the median of its runs' tokens/s per GPU, their peak where printed."""
        records = []
        for number, (point, runs) in enumerate(self.points().values()):
            peaks = [r.measured_peak_bytes for r in runs if r.measured_peak_bytes is not None]
            result = TrialResult(status="ok", tokens_per_s=statistics.median(r.measured_tokens_per_s_per_gpu
                                                                             for r in runs),
                                 peak_bytes=int(statistics.median(peaks)) if peaks else None)
            records.append(TrialRecord(number=number, point=point, status="ok", result=result))
        return records


def _can_make(point: Point, *, global_batch: int, world_size: int) -> bool:
    try:
        grad_accum_for(point, global_batch=global_batch, world_size=world_size)
    except RuleError:
        return False
    return True


def _group(sweep: str, world_size: int, seq_len: int, runs: list[PublishedRun]) -> SweepGroup:
    batches = Counter(run.candidates[0].global_batch(world_size) for run in runs)
    global_batch = batches.most_common(1)[0][0]
    kept, left_out = [], []
    for run in runs:
        point = run.candidates[0]
        own = point.global_batch(world_size) == global_batch
        layout_rounds_it = not _can_make(point, global_batch=global_batch, world_size=world_size)
        (kept if own or layout_rounds_it else left_out).append(run)
    return SweepGroup(sweep=sweep, world_size=world_size, seq_len=seq_len, global_batch=global_batch,
                      runs=tuple(kept), left_out=tuple(left_out))


def sweep_groups(runs: list[PublishedRun]) -> list[SweepGroup]:
    """Every sweep's runs with a fully printed layout, grouped by world size and sequence length,
    largest group first."""
    grouped: dict[tuple, list[PublishedRun]] = defaultdict(list)
    for run in runs:
        if run.sweep and len(run.candidates) == 1:
            grouped[(run.sweep, run.world_size, run.seq_len)].append(run)
    groups = [_group(sweep, world_size, seq_len, members) for (sweep, world_size, seq_len), members in grouped.items()]
    return sorted(groups, key=lambda g: (-g.rows, g.name))


@dataclass(frozen=True)
class Selection:
    groups: list[SweepGroup]
    min_rows: int
    note: str  # which threshold was used, and why


def select_groups(groups: list[SweepGroup], *, min_rows: int = MIN_ROWS,
                  fallback_min_rows: int = FALLBACK_MIN_ROWS) -> Selection:
    """The groups of at least `min_rows` points; where there are none, those of `fallback_min_rows`."""
    chosen = [g for g in groups if g.rows >= min_rows]
    if chosen:
        return Selection(chosen, min_rows, f"{len(chosen)} sweep group(s) with >= {min_rows} points")
    chosen = [g for g in groups if g.rows >= fallback_min_rows]
    largest = max((g.rows for g in groups), default=0)
    return Selection(chosen, fallback_min_rows,
                     f"no sweep group has >= {min_rows} points (the largest has {largest}): replaying the "
                     f"{len(chosen)} group(s) with >= {fallback_min_rows}: "
                     + "; ".join(f"{g.name} ({g.rows})" for g in chosen))


def table_stem(group: SweepGroup) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", group.name).strip("-")


def write_group_table(group: SweepGroup, out_dir: Path) -> Path:
    """The group as a list-space table (`<stem>.csv` + sidecar) in `out_dir`; returns the CSV's path."""
    first = group.runs[0]
    records = group.records()
    sidecar = sidecar_dict(
        name=f"published: {group.name}", synthetic=False, spec=first.spec, hardware=first.hardware,
        world_size=group.world_size, seq_len=group.seq_len, global_batch=group.global_batch, backend="cuda",
        space=list_space(table_stem(group), [r.point for r in records]), space_kind="list",
        source=first.source, measured_by="the source's authors (published figures, see SOURCES.md), not autoscale",
        throughput="tokens_per_s is the measured tokens/s per GPU",
        at_own_global_batch=[p.short() for p in group.at_own_global_batch()],
        left_out=[r.label for r in group.left_out])
    path = Path(out_dir) / f"{table_stem(group)}.csv"
    write_table(path, records, sidecar)
    return path


def held_out_predictor(group: SweepGroup, runs: list[PublishedRun]) -> Predictor:
    """The cost model with the GPU efficiencies fitted on every source but the group's, as
    `validate_gpu.py`'s leave-one-source-out fits them: the shipped efficiencies were fitted on all
    published runs, this sweep included, so only this one predicts it out of sample."""
    first = group.runs[0]
    training = [run for run in runs if run.source != first.source and layout_refusal(run) is None]
    params = fit_families(training).get(family_of(first), GPU_DEFAULTS)
    return point_predictor(first.spec, first.hardware, world_size=group.world_size, seq_len=group.seq_len,
                           params=params)
