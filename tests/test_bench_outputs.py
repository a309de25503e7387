"""Outputs of a comparison, from hand-made records: JUnit XML, the history folder, the HTML trend page,
and kernel timings read from pytest-benchmark JSON."""

import json
import re
import xml.etree.ElementTree as ET

import pytest
from plotly.offline import get_plotlyjs

from autoscale.bench.compare import compare_records
from autoscale.bench.history import load_history, write_history
from autoscale.bench.junit import write_junit
from autoscale.bench.kernels import cases_from_pytest_benchmark
from autoscale.bench.metrics import TRIAL_METRICS
from autoscale.bench.record import BenchRecord, CaseSamples
from autoscale.bench.suite import load_suite
from autoscale.bench.trend import trend_frame, write_trend
from autoscale.errors import UserError

HARDWARE = {"backend": "cpu", "name": "cpu", "description": "2-core CPU", "device": "test CPU", "device_count": 2}
SUITE = """
name: tiny
backend: cpu
configs:
  - {name: a, model: gpt-tiny, seq_len: 32, steps: 2}
  - {name: b, model: gpt-tiny, seq_len: 32, steps: 2}
"""


def record(created_at: str, step_scale: float = 1.0, commit: str = "a" * 40, **extra_cases) -> BenchRecord:
    def case(scale: float) -> CaseSamples:
        steps = [0.100 * scale, 0.101 * scale, 0.099 * scale, 0.100 * scale, 0.102 * scale]
        return CaseSamples(kind="trial", definition={"model": "gpt-tiny"},
                           samples={"tokens_per_s": [1000 / s for s in steps], "step_s": steps,
                                    "step_cpu_s": [s / 2 for s in steps], "peak_bytes": [4.9e8] * 5})
    cases = {"a": case(step_scale), "b": case(1.0), **extra_cases}
    return BenchRecord(suite="tiny", created_at=created_at, git_commit=commit, versions={"torch": "2.13.0"},
                       hardware=HARDWARE, driver={"torch_cuda": None}, cases=cases)


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    return load_suite(path)


def test_junit_has_one_testcase_per_metric_and_a_failure_per_regression(tmp_path, suite):
    comparison = compare_records(record("2026-01-01T00:00:00+00:00"), record("2026-01-02T00:00:00+00:00", 1.3), suite)
    tree = ET.parse(write_junit(comparison, record("2026-01-02T00:00:00+00:00", 1.3), tmp_path / "j.xml"))
    cases = tree.getroot().findall(".//testcase")
    assert sorted((c.get("classname"), c.get("name")) for c in cases) == sorted(
        (f"bench.tiny.{config}", name) for config in "ab" for name, metric in TRIAL_METRICS.items() if metric.judged)
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("bench.tiny.a", "step_s"), ("bench.tiny.a", "step_cpu_s")}
    assert tree.getroot().find("testsuite").get("failures") == "2"
    assert "ratio 1.3" in cases[1].find("failure").get("message")


def test_new_missing_and_changed_configs_are_named(suite):
    changed = record("2026-01-02T00:00:00+00:00")
    changed.cases["b"] = CaseSamples(kind="trial", definition={"model": "other"}, samples=changed.cases["b"].samples)
    changed.cases["c"] = changed.cases.pop("a")
    comparison = compare_records(record("2026-01-01T00:00:00+00:00"), changed, suite)
    assert (comparison.new_cases, comparison.missing_cases, comparison.changed_definitions) == (["c"], ["a"], ["b"])


def test_failed_repeats_fail_the_comparison(suite):
    broken = record("2026-01-02T00:00:00+00:00")
    broken.cases["a"] = CaseSamples(kind="trial", definition={"model": "gpt-tiny"}, samples={"step_s": []},
                                    failures=["repeat 0: oom: rank0"])
    comparison = compare_records(record("2026-01-01T00:00:00+00:00"), broken, suite)
    assert comparison.regressed and {row.verdict for row in comparison.rows if row.case == "a"} == {"failed"}


def test_history_keeps_one_file_per_run_and_reads_back_in_order(tmp_path, suite):
    baseline = record("2026-01-01T00:00:00+00:00")
    for day, scale in ((3, 1.3), (2, 1.0)):
        candidate = record(f"2026-01-0{day}T00:00:00+00:00", scale, commit=str(day) * 40)
        write_history(tmp_path, candidate, compare_records(baseline, candidate, suite), baseline)
    (tmp_path / "not-a-record.json").write_text("{}")
    history = load_history(tmp_path, "tiny")
    assert [entry.record.git_commit[0] for entry in history] == ["2", "3"]
    frame = trend_frame(history)
    assert set(frame.loc[(frame["case"] == "a") & (frame["metric"] == "step_s"), "verdict"]) == {"unchanged",
                                                                                                 "regressed"}


def test_the_trend_page_is_self_contained_plotly(tmp_path, suite):
    baseline = record("2026-01-01T00:00:00+00:00")
    for day, scale in ((2, 1.0), (3, 1.3)):
        candidate = record(f"2026-01-0{day}T00:00:00+00:00", scale)
        write_history(tmp_path / "h", candidate, compare_records(baseline, candidate, suite), baseline)
    page = write_trend(load_history(tmp_path / "h", "tiny"), tmp_path / "trend.html").read_text()
    assert page.count(get_plotlyjs()) == 1  # the library inlined once
    assert len(re.findall(r'class="plot-spec"', page)) == 2 * len(TRIAL_METRICS)
    own = page.replace(get_plotlyjs(), "")  # plotly.js holds map-tile URLs it never loads for these plots
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', own)  # nothing loads from elsewhere
    assert not re.search(r'https?://', own.replace("http://www.w3.org/2000/svg", ""))
    assert "regressed" in page


def test_kernel_rounds_become_samples_of_time_s():
    report = {"benchmarks": [{"name": "test_rms[torch]", "fullname": "k::test_rms[torch]",
                              "stats": {"data": [0.001, 0.0011, 0.00105]}, "extra_info": {"kernel": "rms_norm"}}]}
    cases = cases_from_pytest_benchmark(report, "report")
    assert cases["kernel:test_rms[torch]"].samples == {"time_s": [0.001, 0.0011, 0.00105]}


def test_kernel_json_without_rounds_is_refused():
    report = {"benchmarks": [{"name": "t", "fullname": "t", "stats": {"median": 0.001}}]}
    with pytest.raises(UserError, match="--benchmark-save-data"):
        cases_from_pytest_benchmark(report, "report")


def test_a_kernel_suite_compares_pytest_benchmark_files(tmp_path):
    """The same statistics for kernels: a file measured 30% slower is a regression of time_s."""
    from autoscale.bench.runner import run_suite

    def bench_file(name: str, scale: float):
        rounds = [scale * t for t in (0.0010, 0.00101, 0.00099, 0.00100, 0.00102, 0.00098)]
        (tmp_path / name).write_text(json.dumps({"benchmarks": [
            {"name": "test_gelu", "fullname": "kernels/bench::test_gelu", "stats": {"data": rounds}}]}))
    bench_file("old.json", 1.0)
    bench_file("new.json", 1.3)
    suites = {}
    for name in ("old", "new"):
        (tmp_path / f"{name}.yaml").write_text(f"name: kernels\nbackend: cpu\nkernels: {{json: {name}.json}}\n")
        suites[name] = load_suite(tmp_path / f"{name}.yaml")
    old, new = (run_suite(suites[n], workdir=tmp_path / n) for n in ("old", "new"))
    comparison = compare_records(old, new, suites["new"])
    assert [(row.case, row.metric, row.verdict) for row in comparison.rows] == [
        ("kernel:test_gelu", "time_s", "regressed")]
