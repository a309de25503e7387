"""The same points measured with `--impl own` and `--impl transformers`, side by side, with the cost
model's error against each.

Give it the run folders of two studies of one config (the same space, so the same points):

    autoscale tune --model examples/llama-tiny.json --impl own --space S --out /tmp/own ...
    autoscale tune --model examples/llama-tiny.json --impl transformers --space S --out /tmp/hf ...
    python benchmarks/impl_side_by_side.py /tmp/own /tmp/hf

It prints one markdown row per point both studies measured: tokens/s and peak memory per rank (the
largest over ranks) of each, and the prediction trials.csv holds (`pred_tokens_per_s`,
`pred_peak_bytes`; the cost model reads the one spec both studies share, so it predicts both alike:
the own study's prediction is shown, each error is against its own study's)
with its relative error against each measurement.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from autoscale.point import Point


def side_by_side(own: pd.DataFrame, transformers: pd.DataFrame) -> pd.DataFrame:
    """One row per point measured ok by both: the two measurements, the prediction, the errors."""
    columns = ["point", "tokens_per_s", "peak_bytes", "pred_tokens_per_s", "pred_peak_bytes"]
    ok = [frame.loc[frame["status"] == "ok"].assign(point=lambda f: [Point.from_row(row).short() for row in
                                                                     f.to_dict("records")])[columns]
          for frame in (own, transformers)]
    joined = ok[0].merge(ok[1], on="point", suffixes=("_own", "_hf"))
    for impl in ("own", "hf"):
        joined[f"tps_error_{impl}"] = joined[f"pred_tokens_per_s_{impl}"] / joined[f"tokens_per_s_{impl}"] - 1
        joined[f"peak_error_{impl}"] = joined[f"pred_peak_bytes_{impl}"] / joined[f"peak_bytes_{impl}"] - 1
    return joined


def markdown(table: pd.DataFrame) -> str:
    mib = 2**20
    lines = ["| point | own tok/s | hf tok/s | hf/own | pred tok/s | err own | err hf | own peak MiB | "
             "hf peak MiB | pred peak MiB | err own | err hf |",
             "|---" * 12 + "|"]
    for row in table.itertuples():
        lines.append(
            f"| {row.point} | {row.tokens_per_s_own:,.0f} | {row.tokens_per_s_hf:,.0f} | "
            f"{row.tokens_per_s_hf / row.tokens_per_s_own:.2f} | {row.pred_tokens_per_s_own:,.0f} | "
            f"{row.tps_error_own:+.0%} | {row.tps_error_hf:+.0%} | {row.peak_bytes_own / mib:,.0f} | "
            f"{row.peak_bytes_hf / mib:,.0f} | {row.pred_peak_bytes_own / mib:,.0f} | {row.peak_error_own:+.0%} | "
            f"{row.peak_error_hf:+.0%} |")
    error = {column: table[column].abs().median() for column in
             ("tps_error_own", "tps_error_hf", "peak_error_own", "peak_error_hf")}
    medians = (f"median |error|: tokens/s own {error['tps_error_own']:.0%}, transformers {error['tps_error_hf']:.0%}; "
               f"peak own {error['peak_error_own']:.0%}, transformers {error['peak_error_hf']:.0%}")
    return "\n".join([*lines, "", medians])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("own", type=Path, help="run folder of the --impl own study")
    parser.add_argument("transformers", type=Path, help="run folder of the --impl transformers study")
    args = parser.parse_args()
    table = side_by_side(pd.read_csv(args.own / "trials.csv"), pd.read_csv(args.transformers / "trials.csv"))
    print(markdown(table))


if __name__ == "__main__":
    main()
