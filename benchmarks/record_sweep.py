"""Record a replay table: every point of a space measured with the real engine, one trial each.

Writes `benchmarks/data/<name>.csv` (trials.csv columns) and `<name>.json` (what the replay needs
for the cost model, plus where and when: hardware, versions, commit, runner, timestamps). The CSV
is rewritten after every point, so a killed sweep keeps its rows and `--resume` measures only the
points still missing. Run it on a quiet machine: the table is the truth every strategy is judged by.

    python benchmarks/record_sweep.py --name cpu-gpt-tiny                    # default space, 2 CPU ranks
    python benchmarks/record_sweep.py --name cpu-gpt-tiny --runner pool      # the warm worker pool
    python benchmarks/replay.py benchmarks/data/cpu-gpt-tiny.csv
"""

from __future__ import annotations

import argparse
import contextlib
import platform
from dataclasses import asdict
import sys
from pathlib import Path
from typing import Callable

from autoscale.engine import MeasurePolicy, TrialRequest, TrialResult, run_trial
from autoscale.errors import UserError
from autoscale.hardware import Hardware, detect
from autoscale.models.spec import ModelSpec
from autoscale.point import baseline_point
from autoscale.results import TrialRecord, git_commit, utc_now, versions
from autoscale.space import SearchSpace
from autoscale.strategies.base import cost_model_predictor
from autoscale.strategies.replay import load_table, sidecar_dict, write_table
from autoscale.study import point_key

DATA_DIR = Path(__file__).resolve().parent / "data"
Runner = Callable[[TrialRequest], TrialResult]


def record_sweep(*, name: str, spec: ModelSpec, space: SearchSpace, hardware: Hardware, backend: str, nproc: int,
                 global_batch: int, seq_len: int, run: Runner, runner_name: str, out_dir: Path, work_dir: Path,
                 timeout_s: float = 300.0, measure: MeasurePolicy = MeasurePolicy(), seed: int = 0,
                 resume: bool = False, say: Callable[[str], None] = print) -> list[TrialRecord]:
    """Measure every point of `space` (already prepared) not yet in the table; return all records."""
    csv_path = out_dir / f"{name}.csv"
    points = space.points(global_batch=global_batch, world_size=nproc)
    done: dict[tuple, TrialRecord] = {}
    if resume and csv_path.exists():
        done = load_table_partial(csv_path)
    elif csv_path.exists():
        raise UserError(f"{csv_path} exists: pass --resume to complete it or choose another --name")
    predictor = cost_model_predictor(spec, hardware, world_size=nproc, seq_len=seq_len)
    baseline = point_key(baseline_point(global_batch, nproc))
    sidecar = sidecar_dict(name=name, synthetic=False, spec=spec, hardware=hardware, world_size=nproc,
                           seq_len=seq_len, global_batch=global_batch, backend=backend, space=space,
                           runner=runner_name, measure=asdict(measure), seed=seed, host=platform.node(),
                           versions=versions(), git_commit=git_commit(), started_at=utc_now())
    records = [done[point_key(p)] for p in points if point_key(p) in done]
    for number, point in enumerate(points):
        if point_key(point) in done:
            continue
        say(f"[{number + 1}/{len(points)}] {point.short()}")
        prediction = predictor(point)
        started_at = utc_now()
        request = TrialRequest(spec=spec, point=point, seq_len=seq_len, backend=backend, nproc=nproc,
                               workdir=work_dir / str(number), timeout_s=timeout_s, measure=measure, seed=seed)
        result = run(request)
        records.append(TrialRecord(number=number, point=point, status="ok" if result.ok else "failed",
                                   reason=result.reason, result=result, is_baseline=point_key(point) == baseline,
                                   pred_peak_bytes=prediction.peak_bytes if prediction else None,
                                   pred_tokens_per_s=prediction.tokens_per_s if prediction else None,
                                   started_at=started_at, finished_at=utc_now()))
        say(f"    {result.status} {result.tokens_per_s or 0:,.0f} tok/s {result.reason}")
        records.sort(key=lambda r: r.number)
        write_table(csv_path, records, {**sidecar, "finished_at": None, "points": len(points)})
    write_table(csv_path, records, {**sidecar, "finished_at": utc_now(), "points": len(points)})
    return records


def load_table_partial(csv_path: Path) -> dict[tuple, TrialRecord]:
    """The rows of an unfinished table, by point (for --resume)."""
    import pandas as pd

    from autoscale.strategies.replay import rows_of

    return {point_key(r.point): r for r in rows_of(pd.read_csv(csv_path))}


@contextlib.contextmanager
def open_runner(kind: str, work_dir: Path):
    """`fresh`: a new launch per trial (autoscale.engine.run_trial); `pool`: the warm worker pool."""
    if kind == "fresh":
        yield run_trial
        return
    from autoscale.engine.pool import WarmPool

    with WarmPool(work_dir / "pool") as pool:
        yield pool


def main(argv: list[str] | None = None) -> int:
    from autoscale.models.presets import resolve_model
    from autoscale.space import load_space
    from autoscale.tuner import prepare_space

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the table's file name in --out-dir, without .csv")
    parser.add_argument("--space", default="default")
    parser.add_argument("--model", default="gpt-tiny")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runner", default="fresh", choices=("fresh", "pool"))
    parser.add_argument("--timeout-per-trial", type=float, default=300.0)
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("runs") / "sweeps")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    try:
        spec = resolve_model(args.model)
        space = prepare_space(load_space(args.space), backend=args.backend, global_batch=args.global_batch,
                              world_size=args.nproc)
        work_dir = args.work_dir / args.name
        with open_runner(args.runner, work_dir) as run:
            records = record_sweep(name=args.name, spec=spec, space=space, hardware=detect(args.backend),
                                   backend=args.backend, nproc=args.nproc, global_batch=args.global_batch,
                                   seq_len=args.seq_len, run=run, runner_name=args.runner, out_dir=args.out_dir,
                                   work_dir=work_dir, timeout_s=args.timeout_per_trial, resume=args.resume)
        load_table(args.out_dir / f"{args.name}.csv")  # the replay can read what was written
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ok = sum(r.status == "ok" for r in records)
    print(f"wrote {args.out_dir / args.name}.csv: {ok} ok, {len(records) - ok} failed of {len(records)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
