"""Does the cost model rank configs as the machine does? Spearman's rho on a measured full sweep.

Reads a sweep table (`benchmarks/data/<name>.csv`, trials.csv columns, with its `<name>.json`
sidecar: model, world size, seq_len, hardware) and prints Spearman's rank correlation between
predicted and measured tokens/s: with the default parameters, calibrated on the whole sweep
(in-sample), and two-fold cross-validated (fit on half the points, rank the other half), the
honest figure. The issue's goal: 0.8 or better after calibration.

    python benchmarks/rank_correlation.py benchmarks/data/cpu-sweep-gpt-tiny.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

from scipy.stats import spearmanr

from autoscale.costmodel import default_params, predict
from autoscale.costmodel.calibrate import Observation, Study, fit_study
from autoscale.hardware import get_hardware
from autoscale.models import resolve_model
from autoscale.point import Point

INTEGER_KNOBS = ("zero_stage", "micro_batch", "grad_accum", "tp", "pp")


def read_table(path: Path) -> Study:
    sidecar = json.loads(path.with_suffix(".json").read_text())
    observations = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["status"] != "ok":
                continue
            knobs = {k: (int(row[k]) if k in INTEGER_KNOBS else row[k]) for k in
                     ("zero_stage", "micro_batch", "grad_accum", "precision", "checkpointing", "offload", "kernels",
                      "tp", "pp")}
            observations.append(Observation(point=Point(**knobs), tokens_per_s=float(row["tokens_per_s"]),
                                            peak_bytes=float(row["peak_bytes"])))
    return Study(spec=resolve_model(sidecar["model"]), hardware=get_hardware(sidecar["hardware"]),
                 world_size=int(sidecar["world_size"]), seq_len=int(sidecar["seq_len"]),
                 observations=tuple(observations))


def rho(study: Study, observations, params) -> float:
    predicted = [predict(study.spec, o.point, study.hardware, world_size=study.world_size, seq_len=study.seq_len,
                         params=params).time.tokens_per_s for o in observations]
    return float(spearmanr(predicted, [o.tokens_per_s for o in observations]).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path)
    parser.add_argument("--folds-seed", type=int, default=0)
    args = parser.parse_args()
    study = read_table(args.table)
    observations = list(study.observations)
    defaults = default_params(study.hardware.name)
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
    print(f"throughput median |error|: {whole.throughput_error_before:.1%} before, {whole.throughput_error_after:.1%} "
          f"after calibration; memory {whole.memory_error_before:.1%} -> {whole.memory_error_after:.1%}")


if __name__ == "__main__":
    main()
