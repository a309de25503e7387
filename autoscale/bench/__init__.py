"""`autoscale bench`: fixed configs timed every night against a baseline or, in A/B mode, against another
environment in the same job, with statistics that tell a real regression from a noisy machine.
Suite -> runner (or ab) -> record -> compare -> outputs."""

from autoscale.bench.compare import BenchComparison, MetricRow, compare_records
from autoscale.bench.job import BenchOptions, BenchOutcome, run_bench
from autoscale.bench.paired import compare_paired
from autoscale.bench.record import BenchRecord, CaseSamples, load_record
from autoscale.bench.stats import Comparison, compare_samples
from autoscale.bench.suite import Suite, load_suite

__all__ = ["BenchComparison", "BenchOptions", "BenchOutcome", "BenchRecord", "CaseSamples", "Comparison",
           "MetricRow", "Suite", "compare_paired", "compare_records", "compare_samples", "load_record", "load_suite", "run_bench"]
