"""Throughput against published training runs, with one global parameter set (no per-row tuning).

    python benchmarks/validate_published.py [--csv PATH]

`--csv` defaults to `benchmarks/data/published_runs.csv` (a copy of the shared data). Goal: median |error| <= 15%, none beyond 30%. The parameters
are the A100 family's GPU defaults, fitted by `benchmarks/validate_gpu.py` over six sources these
rows among them; that benchmark also scores these rows with the other five sources only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from autoscale.costmodel.published import compare_published

REPO = Path(__file__).resolve().parent.parent
BUNDLED_CSV = REPO / "benchmarks" / "data" / "published_runs.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=BUNDLED_CSV)
    args = parser.parse_args(argv)
    path = args.csv
    rows = compare_published(path)
    print(f"published runs from {path}")
    print(f"{'model':<12} {'gpus':>5} {'tp':>3} {'pp':>3} {'mb':>3} {'v':>2} {'published':>10} {'predicted':>10} "
          f"{'error':>7}  (TFLOP/s per GPU, recompute included)")
    for row in rows:
        print(f"{row.model:<12} {row.gpus:>5} {row.tp:>3} {row.pp:>3} {row.micro_batch:>3} {row.pipeline_chunks:>2} "
              f"{row.published_tflops:>10.1f} {row.predicted_tflops:>10.1f} {row.error:>+7.1%}")
    errors = [abs(row.error) for row in rows]
    median, worst = statistics.median(errors), max(errors)
    print(f"median |error| {median:.1%} (goal <= 15%), max |error| {worst:.1%} (goal <= 30%)")
    return 0 if median <= 0.15 and worst <= 0.30 else 1


if __name__ == "__main__":
    sys.exit(main())
