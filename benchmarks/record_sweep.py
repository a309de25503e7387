"""Record a replay table: every point of a space measured with the real engine, in one or more rounds.

Writes `benchmarks/data/<name>.csv` (trials.csv columns) and `<name>.json` (what the replay needs
for the cost model, plus where and when: hardware, versions, commit, runner, timestamps). The CSV
is rewritten after every point, so a killed sweep keeps its rows and `--resume` measures only the
points still missing. Run it on a quiet machine: the table is the truth every strategy is judged by.

With `--rounds N` every point is measured N times, in rounds that each visit the whole space in a
new shuffled order, so a slow spell of the machine is spread over many points instead of marking a
run of neighbours. Each row is then the point's median trial (by tokens/s), and every single
measurement is kept in `<name>.samples.csv` (with its round), from which
`benchmarks/rank_correlation.py` reads how reproducible the measured ranking itself is.

    python benchmarks/record_sweep.py --name cpu-gpt-tiny                    # default space, 2 CPU ranks
    python benchmarks/record_sweep.py --name cpu-gpt-tiny --runner pool --rounds 3
    python benchmarks/replay.py benchmarks/data/cpu-gpt-tiny.csv
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import random
from dataclasses import asdict
import sys
from pathlib import Path
from typing import Callable

from autoscale.costmodel import point_predictor
from autoscale.engine import MeasurePolicy, TrialRequest, TrialResult, run_trial
from autoscale.errors import UserError
from autoscale.hardware import Hardware, detect
from autoscale.models.spec import ModelSpec
from autoscale.point import baseline_point
from autoscale.results import TrialRecord, atomic_write_text
from autoscale.provenance import git_commit, utc_now, versions
from autoscale.space import SearchSpace
from autoscale.strategies.replay import load_table, sidecar_dict, write_table

DATA_DIR = Path(__file__).resolve().parent / "data"
Runner = Callable[[TrialRequest], TrialResult]


def record_sweep(*, name: str, spec: ModelSpec, space: SearchSpace, hardware: Hardware, backend: str, nproc: int,
                 global_batch: int, seq_len: int, run: Runner, runner_name: str, out_dir: Path, work_dir: Path,
                 timeout_s: float = 300.0, measure: MeasurePolicy = MeasurePolicy(), rounds: int = 1, seed: int = 0,
                 resume: bool = False, say: Callable[[str], None] = print) -> list[TrialRecord]:
    """Measure every point of `space` (already prepared) `rounds` times; return the table's rows.

    The samples file is the sweep's own record: a resumed sweep measures only the (round, point)
    pairs it lacks, and the table is re-derived from it after every measurement."""
    csv_path = out_dir / f"{name}.csv"
    samples_path = samples_path_of(csv_path)
    points = space.points(global_batch=global_batch, world_size=nproc)
    samples: list[tuple[int, TrialRecord]] = []
    if resume and samples_path.exists():
        samples = load_samples(samples_path)
    elif csv_path.exists() or samples_path.exists():
        raise UserError(f"{csv_path} exists: pass --resume to complete it or choose another --name")
    done = {(round_, r.point.key()) for round_, r in samples}
    predictor = point_predictor(spec, hardware, world_size=nproc, seq_len=seq_len, warm_ranks=runner_name == "pool")
    baseline = baseline_point(global_batch, nproc).key()
    sidecar = sidecar_dict(name=name, synthetic=False, spec=spec, hardware=hardware, world_size=nproc,
                           seq_len=seq_len, global_batch=global_batch, backend=backend, space=space,
                           runner=runner_name, measure=asdict(measure), rounds=rounds, seed=seed,
                           host=platform.node(), versions=versions(), git_commit=git_commit(), started_at=utc_now())
    numbers = {p.key(): number for number, p in enumerate(points)}
    for round_ in range(rounds):
        order = list(points)
        if round_ > 0:  # round 0 keeps the space's order, so a one-round table reads as before
            random.Random(seed + round_).shuffle(order)
        for position, point in enumerate(order):
            if (round_, point.key()) in done:
                continue
            number = numbers[point.key()]
            say(f"[round {round_ + 1}/{rounds}, {position + 1}/{len(points)}] {point.short()}")
            prediction = predictor(point)
            started_at = utc_now()
            request = TrialRequest(spec=spec, point=point, seq_len=seq_len, backend=backend, nproc=nproc,
                                   workdir=work_dir / f"r{round_}-{number}", timeout_s=timeout_s, measure=measure,
                                   seed=seed)
            result = run(request)
            record = TrialRecord(number=number, point=point, status="ok" if result.ok else "failed",
                                 reason=result.reason, result=result, is_baseline=point.key() == baseline,
                                 pred_peak_bytes=prediction.peak_bytes if prediction else None,
                                 pred_tokens_per_s=prediction.tokens_per_s if prediction else None,
                                 started_at=started_at, finished_at=utc_now())
            samples.append((round_, record))
            say(f"    {result.status} {result.tokens_per_s or 0:,.0f} tok/s {result.reason}")
            write_samples(samples_path, samples)
            write_table(csv_path, median_records(samples),
                        {**sidecar, "finished_at": None, "points": len(points)})
    records = median_records(samples)
    write_table(csv_path, records, {**sidecar, "finished_at": utc_now(), "points": len(points)})
    return records


def median_records(samples: list[tuple[int, TrialRecord]]) -> list[TrialRecord]:
    """One row per point: its median ok trial by tokens/s (the lower middle of an even count), or
    its latest failure when no round succeeded."""
    by_point: dict[tuple, list[TrialRecord]] = {}
    for _, record in samples:
        by_point.setdefault(record.point.key(), []).append(record)
    rows = []
    for records in by_point.values():
        ok = sorted((r for r in records if r.status == "ok"), key=lambda r: r.result.tokens_per_s)
        rows.append(ok[(len(ok) - 1) // 2] if ok else records[-1])
    return sorted(rows, key=lambda r: r.number)


def samples_path_of(csv_path: Path) -> Path:
    return csv_path.with_name(f"{csv_path.stem}.samples.csv")


def write_samples(path: Path, samples: list[tuple[int, TrialRecord]]) -> None:
    import pandas as pd

    frame = pd.DataFrame([{"round": round_, **record.row()} for round_, record in samples])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, frame.to_csv(index=False))


def load_samples(path: Path) -> list[tuple[int, TrialRecord]]:
    """Every measurement of a sweep, with its round (for --resume and rank_correlation.py)."""
    import pandas as pd

    from autoscale.strategies.replay import rows_of

    frame = pd.read_csv(path)
    samples = []
    for round_, group in frame.groupby("round", sort=True):
        samples += [(int(round_), record) for record in rows_of(group)]
    return samples


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
    parser.add_argument("--rounds", type=int, default=1, help="measurements per point, in shuffled rounds")
    parser.add_argument("--min-steps", type=int, default=MeasurePolicy.min_steps,
                        help="timed steps at least, per measurement")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.min_steps < 1:
        parser.error("--rounds and --min-steps must be at least 1")
    try:
        spec = resolve_model(args.model)
        space = load_space(args.space).for_backend(args.backend, global_batch=args.global_batch,
                              world_size=args.nproc)
        work_dir = args.work_dir / args.name
        with open_runner(args.runner, work_dir) as run:
            records = record_sweep(name=args.name, spec=spec, space=space, hardware=detect(args.backend),
                                   backend=args.backend, nproc=args.nproc, global_batch=args.global_batch,
                                   seq_len=args.seq_len, run=run, runner_name=args.runner, out_dir=args.out_dir,
                                   work_dir=work_dir, timeout_s=args.timeout_per_trial, rounds=args.rounds,
                                   measure=MeasurePolicy(min_steps=args.min_steps), resume=args.resume)
        load_table(args.out_dir / f"{args.name}.csv")  # the replay can read what was written
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ok = sum(r.status == "ok" for r in records)
    print(f"wrote {args.out_dir / args.name}.csv: {ok} ok, {len(records) - ok} failed of {len(records)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
