"""`autoscale bench`: fixed configs timed every night against a baseline or, in A/B mode, against another
environment in the same job, with statistics that tell a real regression from a noisy machine.
Suite -> runner (or ab) -> record -> compare -> outputs."""

import importlib

_HOMES = {"BenchComparison": "compare", "MetricRow": "compare", "compare_records": "compare",
          "BenchOptions": "job", "BenchOutcome": "job", "run_bench": "job", "compare_paired": "paired",
          "BenchRecord": "record", "CaseSamples": "record", "load_record": "record",
          "Comparison": "stats", "compare_samples": "stats", "Suite": "suite", "load_suite": "suite"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """Lazy: the CLI reads a few defaults from bench's modules without loading scipy and pandas."""
    if name not in _HOMES:
        raise AttributeError(f"module 'autoscale.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"autoscale.bench.{_HOMES[name]}"), name)
