"""Benchmarks of the kernel sets (pytest-benchmark; `pytest kernels/bench --benchmark-json=out.json`) and
`python -m kernels.bench.table out.json`, which prints them as a table. Never part of the unit tests."""
