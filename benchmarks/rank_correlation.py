"""Does the cost model rank configs as the machine does? Spearman's rho on a measured full sweep.

Reads a sweep table (`benchmarks/data/<name>.csv`, trials.csv columns, with its `<name>.json`
sidecar: model, world size, seq_len, hardware) and prints Spearman's rank correlation between
predicted and measured tokens/s: with the default parameters, calibrated on the whole sweep
(in-sample), and two-fold cross-validated (fit on half the points, rank the other half), the
honest figure; with `--fit-on`, calibrated on another model's sweep, the figure a user gets who
calibrated once on this machine. The goal: 0.8 or better after calibration.

When the sweep was recorded in rounds (`record_sweep.py --rounds N`, which writes
`<name>.samples.csv`), it also prints Spearman's rho between the rounds themselves: how well the
machine's own measurements agree on the ranking, the ceiling any model can be held to.

    python benchmarks/rank_correlation.py benchmarks/data/cpu-sweep-gpt-tiny-r3.csv
    python benchmarks/rank_correlation.py benchmarks/data/cpu-sweep-llama-tiny-r3.csv \
        --fit-on benchmarks/data/cpu-sweep-gpt-tiny-r3.csv    # parameters from another model's sweep
"""

from __future__ import annotations

import argparse
import itertools
import random
from pathlib import Path

from scipy.stats import spearmanr

from autoscale.costmodel import default_params, predict
from autoscale.costmodel.calibrate import Observation, Study, fit_study
from autoscale.strategies.replay import load_table
from record_sweep import load_samples, samples_path_of  # beside this script


def read_table(path: Path) -> tuple[Study, bool]:
    """The table's ok points as calibration observations, in the setting its sidecar records, and
    whether they were measured on warm ranks (which defaults to start from)."""
    table = load_table(path)
    observations = tuple(Observation(point=point, tokens_per_s=float(result.tokens_per_s),
                                     peak_bytes=float(result.peak_bytes))
                         for point in table.points() if (result := table.results[point.key()]).ok)
    return Study(spec=table.spec, hardware=table.hardware, world_size=table.world_size, seq_len=table.seq_len,
                 observations=observations), table.warm_ranks


def rho(study: Study, observations, params) -> float:
    predicted = [predict(study.spec, o.point, study.hardware, world_size=study.world_size, seq_len=study.seq_len,
                         params=params).time.tokens_per_s for o in observations]
    return float(spearmanr(predicted, [o.tokens_per_s for o in observations]).statistic)


def round_agreement(table: Path) -> list[tuple[int, int, float]]:
    """Spearman's rho between every two rounds of a sweep's samples file (points ok in both)."""
    path = samples_path_of(table)
    if not path.exists():
        return []
    by_round: dict[int, dict[int, float]] = {}
    for round_, record in load_samples(path):
        if record.status == "ok":
            by_round.setdefault(round_, {})[record.number] = record.result.tokens_per_s
    pairs = []
    for a, b in itertools.combinations(sorted(by_round), 2):
        common = sorted(set(by_round[a]) & set(by_round[b]))
        if len(common) > 2:
            pairs.append((a, b, float(spearmanr([by_round[a][n] for n in common],
                                                [by_round[b][n] for n in common]).statistic)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path)
    parser.add_argument("--folds-seed", type=int, default=0)
    parser.add_argument("--fit-on", type=Path, action="append", default=[], metavar="TABLE",
                        help="also rank this table with parameters calibrated on another sweep (another model)")
    args = parser.parse_args()
    study, warm_ranks = read_table(args.table)
    observations = list(study.observations)
    defaults = default_params(study.hardware.name, warm_ranks=warm_ranks)
    whole = fit_study(study, start=defaults)
    shuffled = observations[:]
    random.Random(args.folds_seed).shuffle(shuffled)
    halves = [shuffled[::2], shuffled[1::2]]
    held_out = []
    for fit_half, test_half in (halves, halves[::-1]):
        fitted = fit_study(Study(spec=study.spec, hardware=study.hardware, world_size=study.world_size,
                                 seq_len=study.seq_len, observations=tuple(fit_half)), start=defaults)
        held_out.append(rho(study, test_half, fitted.params))
    print(f"{args.table.name}: {len(observations)} measured points of {study.spec.name} on {study.world_size} "
          f"{study.hardware.name} ranks")
    print(f"{'cost model parameters':<44}{'Spearman rho':>14}")
    print(f"{'defaults (uncalibrated)':<44}{rho(study, observations, defaults):>14.3f}")
    print(f"{'calibrated on the whole sweep (in-sample)':<44}{rho(study, observations, whole.params):>14.3f}")
    for index, value in enumerate(held_out):
        print(f"{f'calibrated on half, ranked on the other ({index + 1})':<44}{value:>14.3f}")
    for other in args.fit_on:
        fitted = fit_study(read_table(other)[0], start=defaults)
        print(f"{f'calibrated on {other.stem}':<44.44}{rho(study, observations, fitted.params):>14.3f}")
    for a, b, value in round_agreement(args.table):
        print(f"{f'measured round {a + 1} against round {b + 1} (no model)':<44}{value:>14.3f}")
    print(f"throughput median |error|: {whole.throughput_error_before:.1%} before, {whole.throughput_error_after:.1%} "
          f"after calibration; memory {whole.memory_error_before:.1%} -> {whole.memory_error_after:.1%}")


if __name__ == "__main__":
    main()
