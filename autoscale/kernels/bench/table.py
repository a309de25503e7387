"""Turn a pytest-benchmark JSON from `kernels/bench` into a table: per kernel and shape, each kernel set's
forward+backward time (p50, and the interquartile range) and peak memory, relative to torch eager.

`python -m kernels.bench.table bench.json` prints it (markdown); `rows` and `format_table` are the data
and the text, kept apart so the numbers are testable without parsing text.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

IMPLS = ("torch", "compile", "triton")


@dataclass(frozen=True)
class Row:
    kernel: str
    shape: str
    impl: str
    p50_ms: float | None
    q1_ms: float | None
    q3_ms: float | None
    peak_mb: float | None
    speedup_vs_torch: float | None
    """torch eager's p50 over this set's: above 1 is faster."""
    memory_ratio_vs_torch: float | None
    """torch eager's peak over this set's: above 1 uses less memory."""


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def rows(report: dict) -> list[Row]:
    """One row per (kernel, shape, set); a set absent from the report (skipped or failed) has empty figures."""
    measured: dict[tuple[str, str], dict[str, dict]] = {}
    for bench in report.get("benchmarks", []):
        info = bench["extra_info"]
        measured.setdefault((info["kernel"], info["shape"]), {})[info["impl"]] = bench
    table = []
    for (kernel, shape), by_impl in measured.items():
        torch_bench = by_impl.get("torch")
        torch_p50 = torch_bench["stats"]["median"] * 1e3 if torch_bench else None
        torch_peak = torch_bench["extra_info"].get("peak_mb") if torch_bench else None
        for impl in IMPLS:
            bench = by_impl.get(impl)
            if bench is None:
                table.append(Row(kernel, shape, impl, None, None, None, None, None, None))
                continue
            stats, peak_mb = bench["stats"], bench["extra_info"].get("peak_mb")
            p50_ms = stats["median"] * 1e3
            table.append(Row(kernel, shape, impl, p50_ms, stats["q1"] * 1e3, stats["q3"] * 1e3, peak_mb,
                             _ratio(torch_p50, p50_ms), _ratio(torch_peak, peak_mb)))
    return table


def _number(value: float | None, digits: int, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def format_table(table: list[Row], report: dict) -> str:
    first = next(iter(report.get("benchmarks", [])), None)
    where = "no benchmarks recorded"
    if first:
        info = first["extra_info"]
        where = (f"{info['device']}, {info['dtype']}, torch {info['torch_version']}, "
                 f"triton {info['triton_version']}, {info['timestamp']}")
    lines = [f"Kernel forward+backward ({where}); 'not measured' = skipped or failed, see the pytest log.", "",
             "| kernel | shape | impl | fwd+bwd ms p50 | IQR ms | peak MB | speedup vs torch | memory ratio vs torch |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in table:
        if row.p50_ms is None:
            lines.append(f"| {row.kernel} | {row.shape} | {row.impl} | not measured | | | | |")
            continue
        lines.append(f"| {row.kernel} | {row.shape} | {row.impl} | {row.p50_ms:.3f} | "
                     f"{_number(row.q1_ms, 3)}-{_number(row.q3_ms, 3)} | {_number(row.peak_mb, 1)} | "
                     f"{_number(row.speedup_vs_torch, 2, 'x')} | {_number(row.memory_ratio_vs_torch, 2, 'x')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON written by --benchmark-json")
    report = json.loads(parser.parse_args(argv).json.read_text())
    print(format_table(rows(report), report))


if __name__ == "__main__":
    main()
