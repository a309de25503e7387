"""`autoscale bench --against` end to end with real trials: both sides the same interpreter and code,
the candidate slowed by the test-only sleep inside every timed step, gpt-tiny on 2 CPU ranks.

Cut to at least 6 rounds of 4 turns (at most 12 rounds or 150 s) to stay near two minutes; 6 rounds is
the fewest at which the Wilcoxon signed-rank test can reach p < 0.05. How often one A/B run catches a
10% slowdown on this machine is benchmarks/bench_false_alarms.py --ab's figure.
"""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autoscale.bench.ab import BASELINE, CANDIDATE, NO_SLOWDOWN, Slowdown, side_command, side_environment
from autoscale.bench.interleave import paced_round, start_side
from autoscale.bench.suite import load_suite
from autoscale.cli import app

pytestmark = pytest.mark.slow

SMOKE = Path(__file__).resolve().parents[1] / "ci" / "suites" / "cpu-smoke.yaml"
# gpt-tiny's step takes about 0.1 s on a quiet 2-core machine and 0.2-0.4 s when other jobs share it,
# with rounds differing by up to 2x between the sides: 0.5 s more per step is a slowdown past that noise
SLEEP_PER_STEP_S = 0.5


def tiny_ab_suite(folder: Path) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["configs"][0].update(rounds=6, max_rounds=12, budget_s=150, turns=4, warmup_steps=1)
    path = folder / "ab.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.nightly
def test_a_slowed_candidate_against_the_same_interpreter_exits_1(tmp_path):
    junit = tmp_path / "junit.xml"
    result = CliRunner().invoke(app, ["bench", "--suite", str(tiny_ab_suite(tmp_path)), "--against", sys.executable,
                                      "--history", str(tmp_path / "history"), "--junit", str(junit),
                                      "--test-sleep-per-step", str(SLEEP_PER_STEP_S)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    root = ET.parse(junit).getroot()
    regressed = {case.get("name") for case in root.iter("testcase") if case.find("failure") is not None}
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["mode"] == "A/B" and "candidate" in result.output and "baseline" in result.output
    assert result.exit_code == 1 and "step_s" in regressed, result.output[-2000:]
    assert "peak_bytes" not in regressed  # a sleep costs time, not memory


def test_a_paced_round_takes_turns_step_by_step_and_extra_work_shows_in_cpu_time(tmp_path):
    suite = load_suite(tiny_ab_suite(tmp_path))
    case = suite.cases[0]
    sides = [start_side(side, side_command(sys.executable, suite, case, tmp_path / side, slowdown),
                        folder=tmp_path / side, env=side_environment(side))
             for side, slowdown in ((BASELINE, NO_SLOWDOWN), (CANDIDATE, Slowdown(0.2, "spin")))]
    values, failure = paced_round(sides, turns=4, ready_timeout_s=case.timeout_s)
    assert failure is None
    assert [len(side.step_s) for side in sides] == [4, 4]
    assert values[CANDIDATE]["step_cpu_s"] > values[BASELINE]["step_cpu_s"] + 0.15  # 0.2 s of busy work a step
    assert values[BASELINE]["peak_bytes"] > 0 and values[BASELINE]["tokens_per_s"] > 0


@pytest.mark.nightly
def test_kernel_benchmarks_run_alternately_with_each_side_interpreter(tmp_path):
    """The shipped kernel benchmark (torch eager on CPU), one kernel, in 2 ABBA rounds: each side's value
    per round is the median of its pytest-benchmark rounds, and the comparison pairs them."""
    from autoscale.bench.ab import probe_interpreter, run_ab
    from autoscale.bench.compare import compare_records
    from autoscale.bench.paired import PAIRED

    suite_path = tmp_path / "kernels.yaml"
    suite_path.write_text("name: k\nbackend: cpu\nkernels:\n  command: python -m pytest --pyargs autoscale.kernels.bench -q "
                          "-p no:cacheprovider -o addopts= -k 'rms_norm and torch'\n  rounds: 2\n")
    suite = load_suite(suite_path)
    baseline, candidate = run_ab(suite, against=Path(sys.executable), other=probe_interpreter(Path(sys.executable)),
                                 workdir=tmp_path / "work")
    [name] = candidate.cases
    assert name.startswith("kernel:test_forward_backward[torch-rms_norm")
    for record in (baseline, candidate):
        case = record.cases[name]
        assert case.kind == "kernel" and not case.failures and len(case.samples["time_s"]) == 2
        assert all(0 < t < 10 for t in case.samples["time_s"])
    assert sorted(p.name for p in (tmp_path / "work" / "kernels").iterdir()) == [
        "round0-baseline", "round0-candidate", "round1-baseline", "round1-candidate"]
    [row] = compare_records(baseline, candidate, suite, paired=True).rows
    assert row.metric == "time_s" and row.comparison.method == PAIRED and row.comparison.ratio > 0
