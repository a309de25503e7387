"""How many trials does each search strategy need to reach a config within 3% of the best?

Replays every registered strategy (autoscale/strategies/) against a table of trials measured over a
whole space, 20 seeds each, and prints per strategy the median, p25-p75, min-max and mean trials to
the first near-best config, its ratio to grid's and random's medians, and whether the goal
holds (ours at most a third of grid's trials and half of random's median).

    python benchmarks/replay.py benchmarks/data/cpu-sweep-gpt-tiny-r3.csv   # a table recorded by record_sweep.py
    python benchmarks/replay.py --synthetic cpu                        # SYNTHETIC: cost model + noise
    python benchmarks/replay.py --synthetic gpu --strategies grid,random,autoscale
    python benchmarks/replay.py --published                            # published sweeps (list spaces)

`--published` builds one list-space table per sweep group of the shared published GPU runs with
at least `--min-rows` points (`published_sweeps.py`; written to `--out` or a temporary folder,
never into the repository), replays every strategy on each, and prints a table per group and one
across the groups. Those figures are the sources' authors' measurements, not ours.
A synthetic table is built from the cost model itself, so it favours the cost-model-seeded
strategy; its output says SYNTHETIC on every table and is never a measurement.
ds-model-based needs xgboost (pip install xgboost), an optional dependency of this benchmark only.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autoscale.costmodel.gpu_runs import load_published_runs
from autoscale.errors import UserError
from autoscale.strategies import STRATEGIES
from autoscale.strategies.replay import (NEAR_BEST, AcrossTables, ReplayTable, SummaryRow, across_tables, goals,
                                         load_table, replay, summarize)
from published_sweeps import (MIN_ROWS, held_out_predictor, select_groups, sweep_groups,  # beside this script
                              write_group_table)

PUBLISHED_DATA = Path(__file__).resolve().parent / "data"  # a copy of shared/data, SOURCES.md beside the GPU rows
HELD_OUT = "autoscale held-out"
PUBLISHED = "published: measured by the sources' authors (SOURCES.md), not by autoscale"

SYNTHETIC_SETUPS = {
    # the table record_sweep.py records by default, on this machine's CPU
    "cpu": dict(model="gpt-tiny", hardware="cpu", backend="cpu", world_size=2, global_batch=16, seq_len=128),
    # a model that does not fit everywhere, so predicted OOMs matter
    "gpu": dict(model="llama-7b", hardware="a100-40gb", backend="cuda", world_size=8, global_batch=64, seq_len=2048),
}


def synthetic(which: str, *, space: str, seed: int) -> ReplayTable:
    from autoscale.hardware import get_hardware
    from autoscale.models.presets import resolve_model
    from autoscale.space import load_space
    from autoscale.strategies.synthetic import synthetic_table

    setup = SYNTHETIC_SETUPS[which]
    prepared = load_space(space).for_backend(setup["backend"], global_batch=setup["global_batch"],
                                             world_size=setup["world_size"])
    table, _, _ = synthetic_table(name=f"SYNTHETIC-{which}-{setup['model']}", spec=resolve_model(setup["model"]),
                                  hardware=get_hardware(setup["hardware"]), world_size=setup["world_size"],
                                  seq_len=setup["seq_len"], global_batch=setup["global_batch"], space=prepared,
                                  backend=setup["backend"], seed=seed)
    return table


def _count(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.1f}".removesuffix(".0")


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isinf(value) else f"{value:.2f}"


def summary_table(table: ReplayTable, rows: list[SummaryRow], seeds: int, *, label: str | None = None) -> Table:
    label = label or ("SYNTHETIC (cost model + noise, not measured)" if table.synthetic else "measured")
    result = Table(title=escape(f"trials to within {NEAR_BEST:.0%} of the best, {seeds} seeds: {table.name} "
                                f"[{label}], {len(table.points())} points"))
    for column in ("strategy", "median", "p25-p75", "min-max", "mean", "never", "vs grid", "vs random"):
        result.add_column(column, justify="left" if column == "strategy" else "right")
    for row in rows:
        result.add_row(row.strategy, _count(row.median), f"{_count(row.p25)}-{_count(row.p75)}",
                       f"{_count(row.low)}-{_count(row.high)}", _count(row.mean), str(row.not_found),
                       _ratio(row.vs_grid), _ratio(row.vs_random))
    return result


def across_table(rows: list[AcrossTables], groups: int, seeds: int) -> Table:
    result = Table(title=escape(f"across {groups} published sweep group(s), {seeds} seeds each [{PUBLISHED}]"))
    for column in ("strategy", "median of group medians", "never (seeds)"):
        result.add_column(column, justify="left" if column == "strategy" else "right")
    for row in rows:
        result.add_row(row.strategy, _count(row.median), f"{row.not_found} of {row.seeds}")
    return result


def replay_published(console: Console, *, data: Path, megatron_csv: Path | None, out: Path | None, min_rows: int,
                     names: list[str], seeds: int) -> None:
    """Build the published sweep tables, replay every strategy on each, print a table per group and one
    across. `autoscale` runs twice where asked for: with the shipped cost model (fitted on all published
    runs, so in-sample here) and, as `HELD_OUT`, with one fitted without the group's source."""
    runs = load_published_runs(data, megatron_csv)
    selection = select_groups(sweep_groups(runs), min_rows=min_rows)
    console.print(f"{PUBLISHED}; {selection.note}; tables in {out or 'a temporary folder'}; "
                  f"'autoscale' uses the shipped GPU efficiencies, fitted on these runs (in-sample), "
                  f"'{HELD_OUT}' efficiencies fitted without the group's source", highlight=False)
    per_group = []
    with tempfile.TemporaryDirectory(prefix="published-sweeps-") as scratch:
        for group in selection.groups:
            table = load_table(write_group_table(group, out or Path(scratch)))
            counts = replay(table, strategies=names, seeds=range(seeds))
            if "autoscale" in names:
                counts[HELD_OUT] = replay(table, strategies=["autoscale"], seeds=range(seeds),
                                          predictor=held_out_predictor(group, runs))["autoscale"]
            rows = summarize(counts)
            per_group.append(rows)
            console.print(summary_table(table, rows, seeds, label=f"{PUBLISHED}; list space, tokens/s per GPU"))
    if per_group:
        console.print(across_table(across_tables(per_group, seeds=seeds), len(per_group), seeds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", type=Path, help="a CSV with its <table>.json sidecar")
    parser.add_argument("--synthetic", choices=sorted(SYNTHETIC_SETUPS), help="replay a SYNTHETIC table instead")
    parser.add_argument("--published", action="store_true", help="replay the published sweep groups instead")
    parser.add_argument("--space", default="default", help="--synthetic: the search space")
    parser.add_argument("--table-seed", type=int, default=0, help="--synthetic: seed of the made-up errors")
    parser.add_argument("--data", type=Path, default=PUBLISHED_DATA / "gpu",
                        help="--published: the folder of published_gpu_runs.csv and llmfoundry_all.csv")
    parser.add_argument("--megatron-csv", type=Path, default=PUBLISHED_DATA / "published_runs.csv",
                        help="--published: Narayanan et al.'s rows, for the held-out cost model's fit")
    parser.add_argument("--out", type=Path, help="--published: keep the tables in this folder")
    parser.add_argument("--min-rows", type=int, default=MIN_ROWS, help="--published: points a group needs")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    args = parser.parse_args(argv)
    console = Console(width=max(100, Console().width))  # whole strategy names when piped
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    try:
        if sum((args.table is not None, args.synthetic is not None, args.published)) != 1:
            raise UserError("give one of: a table, --synthetic, --published")
        started = time.perf_counter()
        if args.published:
            replay_published(console, data=args.data, out=args.out, min_rows=args.min_rows, names=names,
                             seeds=args.seeds, megatron_csv=args.megatron_csv if args.megatron_csv.exists() else None)
            console.print(f"replayed in {time.perf_counter() - started:.0f} s", highlight=False)
            return 0
        table = synthetic(args.synthetic, space=args.space, seed=args.table_seed) if args.synthetic \
            else load_table(args.table)
        counts = replay(table, strategies=names, seeds=range(args.seeds))
    except UserError as error:
        console.print(f"error: {error}", highlight=False)
        return 2
    if table.synthetic:
        console.print("[bold yellow]SYNTHETIC TABLE: figures come from the cost model with made-up errors, "
                      "not from measurements; the cost-model-seeded strategy is favoured by construction.[/]")
    rows = summarize(counts)
    console.print(summary_table(table, rows, args.seeds))
    for goal in goals(rows):
        verdict = {True: "holds", False: "does NOT hold", None: "not checked"}[goal.held]
        console.print(f"goal: {goal.text}: {verdict}" + (" (SYNTHETIC table)" if table.synthetic else ""),
                      highlight=False)
    console.print(f"replayed in {time.perf_counter() - started:.0f} s", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
