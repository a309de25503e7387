"""A candidate record against a baseline record: one row per config and metric. Pure: no I/O.

Two modes. Against a stored baseline (`paired=False`) the sides were measured at different times:
unpaired statistics (stats.py), and a time metric is "inconclusive" when the host's load differed
materially between the runs and the verdict does not survive dividing out the load's predicted effect
(load.py). In A/B mode (`paired=True`) the sides were measured in the same
job, round by round: paired statistics (paired.py), and load weighs on both sides alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from autoscale.bench.load import HostLoad, describe_load_difference, material_load_ratio
from autoscale.bench.metrics import METRICS
from autoscale.bench.paired import compare_paired
from autoscale.bench.record import BenchRecord, environment_changes, hardware_differences
from autoscale.bench.stats import IMPROVED, INCONCLUSIVE, REGRESSED, Comparison, compare_samples
from autoscale.bench.defaults import DEFAULT_THRESHOLD
from autoscale.bench.suite import Suite

FAILED, NEW = "failed", "new"
STORED, AB = "stored baseline", "A/B"


@dataclass(frozen=True, kw_only=True)
class MetricRow:
    case: str
    metric: str
    unit: str
    higher_is_better: bool
    threshold: float
    baseline_samples: list[float]
    candidate_samples: list[float]
    comparison: Comparison
    failures: list[str] = field(default_factory=list)  # the candidate's failed repeats of this case

    @property
    def verdict(self) -> str:
        return FAILED if self.failures else self.comparison.verdict

    def as_dict(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data


@dataclass(frozen=True, kw_only=True)
class BenchComparison:
    rows: list[MetricRow]
    new_cases: list[str]  # measured now, absent from the baseline
    missing_cases: list[str]  # in the baseline, not measured now
    changed_definitions: list[str]  # same name, different config: the comparison is of different work
    environment_changes: list[str]
    hardware_differences: list[str]
    mode: str = STORED
    against: str | None = None  # A/B: the baseline side's interpreter

    @property
    def inconclusive(self) -> list[MetricRow]:
        return [row for row in self.rows if row.verdict == INCONCLUSIVE]

    @property
    def regressions(self) -> list[MetricRow]:
        return [row for row in self.rows if row.verdict in (REGRESSED, FAILED)]

    @property
    def improvements(self) -> list[MetricRow]:
        return [row for row in self.rows if row.verdict == IMPROVED]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["rows"] = [row.as_dict() for row in self.rows]
        return data


def compare_metric(base_samples: list[float], cand_samples: list[float], *, higher_is_better: bool,
                   threshold: float, suite: Suite, paired: bool, seed: int = 0) -> Comparison:
    if paired:
        return compare_paired(base_samples, cand_samples, higher_is_better=higher_is_better, threshold=threshold,
                              alpha=suite.alpha, confidence=suite.confidence)
    return compare_samples(base_samples, cand_samples, higher_is_better=higher_is_better, threshold=threshold,
                           alpha=suite.alpha, confidence=suite.confidence, n_resamples=suite.resamples, seed=seed)


def compare_records(baseline: BenchRecord, candidate: BenchRecord, suite: Suite, *,
                    default_threshold: float = DEFAULT_THRESHOLD, seed: int = 0, paired: bool = False,
                    against: str | None = None) -> BenchComparison:
    """`paired`: the records come from one A/B job (ab.run_ab), sample i of each side from round i."""
    rows, new_cases, changed = [], [], []
    load_then, load_now = HostLoad.from_dict(baseline.load), HostLoad.from_dict(candidate.load)
    for name, case in candidate.cases.items():
        base_case = baseline.cases.get(name)
        if base_case is None:
            new_cases.append(name)
            continue
        if case.kind == "trial" and base_case.definition != case.definition:
            changed.append(name)
        for metric_name in sorted(set(case.samples) | set(base_case.samples), key=list(METRICS).index):
            metric = METRICS[metric_name]
            if not metric.judged:
                continue
            threshold = suite.threshold(name, metric_name, default_threshold)
            base_samples, cand_samples = base_case.samples.get(metric_name, []), case.samples.get(metric_name, [])
            comparison = compare_metric(base_samples, cand_samples, higher_is_better=metric.higher_is_better,
                                        threshold=threshold, suite=suite, paired=paired, seed=seed)
            load_ratio = None if paired or not metric.load_sensitive else material_load_ratio(load_then, load_now,
                                                                                               threshold)
            if load_ratio is not None and comparison.ratio is not None:
                # the candidate as if measured under the baseline's load: does the verdict survive?
                effect = 1 / load_ratio if metric.higher_is_better else load_ratio
                discounted = compare_metric(base_samples, [value / effect for value in cand_samples],
                                            higher_is_better=metric.higher_is_better, threshold=threshold,
                                            suite=suite, paired=False, seed=seed)
                note = describe_load_difference(load_then, load_now, load_ratio)
                comparison = (replace(comparison, note=f"{note}; the verdict holds with it divided out")
                              if discounted.verdict == comparison.verdict
                              else replace(comparison, verdict=INCONCLUSIVE, note=note))
            rows.append(MetricRow(case=name, metric=metric_name, unit=metric.unit,
                                  higher_is_better=metric.higher_is_better, threshold=threshold,
                                  baseline_samples=list(base_samples), candidate_samples=list(cand_samples),
                                  comparison=comparison, failures=list(case.failures)))
        if not case.samples and case.failures:  # nothing measured at all (a kernel command that failed)
            rows.append(_failure_row(name, case.failures))
    for name, case in candidate.cases.items():
        if name not in baseline.cases and case.failures:
            rows.append(_failure_row(name, case.failures))
    missing = [name for name in baseline.cases if name not in candidate.cases]
    return BenchComparison(rows=rows, new_cases=new_cases, missing_cases=missing, changed_definitions=changed,
                           environment_changes=environment_changes(baseline, candidate),
                           hardware_differences=hardware_differences(baseline.hardware, candidate.hardware),
                           mode=AB if paired else STORED, against=against)


def _failure_row(case: str, failures: list[str]) -> MetricRow:
    empty = Comparison(baseline_median=None, candidate_median=None, ratio=None, ci_low=None, ci_high=None,
                       p_value=None, verdict=FAILED)
    return MetricRow(case=case, metric="run", unit="", higher_is_better=True, threshold=0.0,
                     baseline_samples=[], candidate_samples=[], comparison=empty, failures=list(failures))
