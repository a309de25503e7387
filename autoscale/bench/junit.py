"""JUnit XML of a comparison, the format CI systems (GitHub, GitLab, Jenkins) render as test results:
one testcase per config and metric, a <failure> for a regression, an <error> for failed trials."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from autoscale.bench.compare import FAILED, BenchComparison, MetricRow
from autoscale.bench.record import BenchRecord
from autoscale.bench.paired import PAIRED
from autoscale.bench.stats import INCONCLUSIVE, REGRESSED


def describe(row: MetricRow) -> str:
    """One line: the medians, the ratio with its interval, the p-value and the verdict."""
    c = row.comparison
    if row.verdict == FAILED:
        return f"{row.case}: failed: {'; '.join(row.failures)}"
    if c.ratio is None:
        return f"{row.case} {row.metric}: {c.verdict} ({c.note})"
    scale, unit = (2**20, "MiB") if row.unit == "bytes" else (1, row.unit)
    ratio = "paired ratio" if c.method == PAIRED else "ratio"
    note = f" ({c.note})" if c.note else ""
    return (f"{row.case} {row.metric}: {c.baseline_median / scale:.6g} -> {c.candidate_median / scale:.6g} {unit}, "
            f"{ratio} {c.ratio:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}], p={c.p_value:.3g}, "
            f"threshold {row.threshold:.0%}: {row.verdict}{note}")


def junit_tree(comparison: BenchComparison, candidate: BenchRecord) -> ET.ElementTree:
    failures = sum(row.verdict == REGRESSED for row in comparison.rows)
    errors = sum(row.verdict == FAILED for row in comparison.rows)
    skipped = sum(row.verdict == INCONCLUSIVE for row in comparison.rows)
    suites = ET.Element("testsuites", name="autoscale bench")
    suite = ET.SubElement(suites, "testsuite", name=candidate.suite, tests=str(len(comparison.rows)),
                          failures=str(failures), errors=str(errors), skipped=str(skipped),
                          timestamp=candidate.created_at)
    properties = ET.SubElement(suite, "properties")
    for name, value in (("git_commit", candidate.git_commit), ("hardware", candidate.hardware.get("description")),
                        ("device", candidate.hardware.get("device")), ("mode", comparison.mode),
                        ("against", comparison.against)):
        ET.SubElement(properties, "property", name=name, value=str(value))
    for row in comparison.rows:
        case = ET.SubElement(suite, "testcase", classname=f"bench.{candidate.suite}.{row.case}", name=row.metric)
        text = describe(row)
        if row.verdict == REGRESSED:
            ET.SubElement(case, "failure", message=text, type="regression").text = text
        elif row.verdict == FAILED:
            ET.SubElement(case, "error", message=text, type="trial failed").text = text
        elif row.verdict == INCONCLUSIVE:
            ET.SubElement(case, "skipped", message=text)
        ET.SubElement(case, "system-out").text = text
    return ET.ElementTree(suites)


def write_junit(comparison: BenchComparison, candidate: BenchRecord, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = junit_tree(comparison, candidate)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path
