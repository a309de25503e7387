"""A/B mode without trials: the ABBA order, the paired verdict on synthetic rounds, the stored
baseline's "inconclusive" under differing load, the --against check, and the outputs of an A/B run."""

import json
import math
import os
import stat
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from autoscale.bench.ab import BASELINE, CANDIDATE, abba_order
from autoscale.bench.compare import AB, compare_records
from autoscale.bench.history import load_history, write_history
from autoscale.bench.interleave import paced_round, start_side
from autoscale.bench.junit import write_junit
from autoscale.bench.load import HostLoad, LoadMonitor, material_load_ratio
from autoscale.bench.paired import PAIRED, compare_paired, decided
from autoscale.bench.record import BenchRecord, CaseSamples
from autoscale.bench.stats import IMPROVED, INCONCLUSIVE, REGRESSED, UNCHANGED
from autoscale.bench.suite import load_suite
from autoscale.bench.trend import trend_frame, write_trend
from autoscale.cli import main

STEP_S = 0.1
HARDWARE = {"backend": "cpu", "name": "cpu", "description": "2-core CPU", "device": "test CPU", "device_count": 2}
SUITE = "name: tiny\nbackend: cpu\nconfigs:\n  - {name: a, model: gpt-tiny, seq_len: 32, steps: 2, rounds: 8}\n"


def busy_rounds(n: int, *, shift: float, seed: int, round_noise: float = 0.02) -> tuple[list[float], list[float]]:
    """Step times of n rounds on a busy host: each round's load multiplies both sides by the same factor
    (here anywhere from 1x to 2x, the drift seen on this machine), and each repeat adds its own noise."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(1.0, 2.0, n)
    base = STEP_S * load * np.exp(round_noise * rng.standard_normal(n))
    cand = STEP_S * shift * load * np.exp(round_noise * rng.standard_normal(n))
    return list(base), list(cand)


def test_abba_order_alternates_which_side_runs_first():
    assert abba_order(3) == [(0, BASELINE), (0, CANDIDATE), (1, CANDIDATE), (1, BASELINE), (2, BASELINE),
                             (2, CANDIDATE)]
    sides = [side for _, side in abba_order(8)]
    assert sides.count(BASELINE) == sides.count(CANDIDATE) == 8


def test_a_ten_percent_slowdown_under_a_twofold_load_swing_is_flagged():
    base, cand = busy_rounds(8, shift=1.10, seed=1)
    result = compare_paired(base, cand, higher_is_better=False, threshold=0.05)
    assert result.verdict == REGRESSED and result.method == PAIRED
    assert 1.05 < result.ci_low <= result.ratio <= result.ci_high and result.p_value < 0.05
    slower_throughput = compare_paired([1 / b for b in base], [1 / c for c in cand], higher_is_better=True,
                                       threshold=0.05)
    assert slower_throughput.verdict == REGRESSED


def test_the_same_load_swing_with_identical_code_is_never_flagged():
    verdicts = {compare_paired(*busy_rounds(8, shift=1.0, seed=seed), higher_is_better=False,
                               threshold=0.05).verdict for seed in range(50)}
    assert verdicts <= {UNCHANGED, INCONCLUSIVE} and UNCHANGED in verdicts


def test_seven_of_eight_rounds_leaning_one_way_with_an_interval_holding_1_is_not_a_regression():
    """The false alarm seen on a loaded runner: p = 0.023 from 7 rounds of 8 leaning one way, the
    ratio past 5%, but the t interval still holds 1. More rounds are needed: inconclusive."""
    base = [0.1] * 8
    cand = [0.1 * math.exp(r) for r in (0.01, -0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.40)]
    result = compare_paired(base, cand, higher_is_better=False, threshold=0.05)
    assert result.ratio > 1.05 and result.p_value == pytest.approx(0.0234, abs=1e-3) and result.ci_low < 1
    assert result.verdict == INCONCLUSIVE and not decided(result)


def test_a_consistent_shift_smaller_than_the_threshold_is_not_flagged():
    base, cand = busy_rounds(8, shift=1.02, seed=3, round_noise=0.002)
    result = compare_paired(base, cand, higher_is_better=False, threshold=0.05)
    assert result.p_value < 0.05 and result.ci_high < 1.05  # significant, but smaller than what counts
    assert result.verdict == UNCHANGED


def test_a_clear_speedup_is_an_improvement():
    base, cand = busy_rounds(8, shift=0.8, seed=4)
    assert compare_paired(base, cand, higher_is_better=False, threshold=0.05).verdict == IMPROVED


def test_fewer_than_six_rounds_cannot_reach_significance():
    """Wilcoxon's smallest two-sided p with 5 rounds is 2/32 = 0.0625: documented, not hidden; such a
    run needs more rounds."""
    base, cand = busy_rounds(5, shift=1.3, seed=5)
    result = compare_paired(base, cand, higher_is_better=False, threshold=0.05)
    assert result.p_value == pytest.approx(0.0625) and result.verdict == INCONCLUSIVE


def test_a_significant_ratio_past_the_threshold_is_flagged_when_its_interval_clears_1_not_the_threshold():
    """The interval must clear 1, not the threshold: the ratio itself must pass the threshold."""
    base = [0.1] * 8
    cand = [0.1 * r for r in (1.02, 1.20, 1.04, 1.15, 1.03, 1.12, 1.06, 1.10)]
    result = compare_paired(base, cand, higher_is_better=False, threshold=0.05)
    assert 1 < result.ci_low < 1.05 < result.ratio and result.p_value < 0.05
    assert result.verdict == REGRESSED


def test_a_ratio_past_the_threshold_without_significance_is_inconclusive_not_unchanged():
    base = [0.1] * 8
    cand = [0.1 * r for r in (0.9, 1.4, 0.95, 1.3, 0.92, 1.2, 1.01, 0.97)]
    result = compare_paired(base, cand, higher_is_better=False, threshold=0.05)
    assert result.ratio > 1.05 and result.p_value >= 0.05 and result.verdict == INCONCLUSIVE


def test_a_side_that_dies_before_its_timed_steps_fails_the_round_with_its_last_line(tmp_path):
    sides = [start_side(name, [sys.executable, "-c", f"import sys; print('{name} gave up'); sys.exit(3)"],
                        folder=tmp_path / name, env=dict(os.environ))
             for name in (BASELINE, CANDIDATE)]
    values, failure = paced_round(sides, turns=2, ready_timeout_s=30)
    assert values == {BASELINE: {}, CANDIDATE: {}}
    assert "exited 3 before its timed steps" in failure and "gave up" in failure


def test_unpaired_rounds_are_not_comparable():
    result = compare_paired([0.1, 0.1, 0.1], [0.1, 0.1], higher_is_better=False, threshold=0.05)
    assert result.verdict == "not comparable" and "pair up" in result.note


def load(loadavg: float, steal: float | None = 0.0) -> dict:
    return HostLoad(cpus=2, loadavg_1m_before=loadavg, loadavg_1m_during=loadavg, steal_fraction_during=steal,
                    samples=5).as_dict()


def record(created_at: str, steps: list[float], *, host_load: dict | None = None, commit: str = "a" * 40,
           peak: float = 4.9e8) -> BenchRecord:
    case = CaseSamples(kind="trial", definition={"model": "gpt-tiny"},
                       samples={"tokens_per_s": [1000 / s for s in steps], "step_s": list(steps),
                                "peak_bytes": [peak] * len(steps)})
    return BenchRecord(suite="tiny", created_at=created_at, git_commit=commit, versions={"torch": "2.13.0"},
                       hardware=HARDWARE, driver={"torch_cuda": None}, cases={"a": case}, load=host_load)


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    return load_suite(path)


def steady(scale: float, n: int = 5) -> list[float]:
    return [STEP_S * scale * f for f in (1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.01, 0.99)[:n]]


def test_a_stored_comparison_under_differing_load_is_inconclusive_for_times_only(suite):
    """Load average 2 on 2 CPUs then, 4 now: the load alone predicts steps 2x slower."""
    baseline = record("2026-01-01T00:00:00+00:00", steady(1.0), host_load=load(2.0))
    candidate = record("2026-01-02T00:00:00+00:00", steady(2.0), host_load=load(4.0), peak=6e8)
    verdicts = {row.metric: row.verdict for row in compare_records(baseline, candidate, suite).rows}
    assert verdicts == {"step_s": INCONCLUSIVE, "peak_bytes": REGRESSED}  # tokens/s: step_s restated, not judged
    row = compare_records(baseline, candidate, suite).rows[0]
    assert "host load differs" in row.comparison.note


def test_a_stored_comparison_under_the_same_load_keeps_its_verdict(suite):
    baseline = record("2026-01-01T00:00:00+00:00", steady(1.0), host_load=load(2.5))
    candidate = record("2026-01-02T00:00:00+00:00", steady(1.3), host_load=load(2.4))
    assert compare_records(baseline, candidate, suite).regressed


def test_a_change_larger_than_the_load_explains_keeps_its_verdict(suite):
    """Load 2 then, 2.4 now on 2 CPUs predicts 1.2x; a 3x slower step is a regression either way."""
    baseline = record("2026-01-01T00:00:00+00:00", steady(1.0), host_load=load(2.0))
    candidate = record("2026-01-02T00:00:00+00:00", steady(3.0), host_load=load(2.4))
    rows = {row.metric: row for row in compare_records(baseline, candidate, suite).rows}
    assert rows["step_s"].verdict == REGRESSED and "tokens_per_s" not in rows
    assert "holds with it divided out" in rows["step_s"].comparison.note


def test_no_change_under_differing_load_is_inconclusive_not_unchanged(suite):
    """The same step time at twice the load could be a 2x speed-up hidden by the load."""
    baseline = record("2026-01-01T00:00:00+00:00", steady(1.0), host_load=load(2.0))
    candidate = record("2026-01-02T00:00:00+00:00", steady(1.0), host_load=load(4.0))
    verdicts = {row.metric: row.verdict for row in compare_records(baseline, candidate, suite).rows}
    assert verdicts == {"step_s": INCONCLUSIVE, "peak_bytes": UNCHANGED}


def test_load_below_the_core_count_does_not_count_as_a_difference():
    """0.3 and 1.5 runnable tasks on 2 CPUs: every task has a core either way."""
    then, now = HostLoad.from_dict(load(0.3)), HostLoad.from_dict(load(1.5))
    assert material_load_ratio(then, now, 0.05) is None
    stolen = HostLoad.from_dict(load(1.5, steal=0.2))  # 20% of the CPU time taken by the hypervisor
    assert material_load_ratio(then, stolen, 0.05) == pytest.approx(1.25)


def test_the_load_monitor_samples_before_and_during_the_run():
    with LoadMonitor(every_s=0.01, interval_s=0.01) as monitor:
        threading.Event().wait(0.1)
    assert monitor.result.cpus >= 1 and monitor.result.samples >= 2
    if Path("/proc/loadavg").exists():
        assert monitor.result.loadavg_1m_before is not None and monitor.result.loadavg_1m_during is not None


def ab_records(scale: float) -> tuple[BenchRecord, BenchRecord]:
    base, cand = busy_rounds(8, shift=scale, seed=7)
    return (record("2026-01-02T00:00:00+00:00", base, host_load=load(3.0), commit="b" * 40),
            record("2026-01-02T00:00:01+00:00", cand, host_load=load(3.0)))


def test_junit_history_and_trend_carry_the_a_b_verdicts(tmp_path, suite):
    baseline, candidate = ab_records(1.3)
    comparison = compare_records(baseline, candidate, suite, paired=True, against="/venv-base/bin/python")
    assert comparison.mode == AB and comparison.regressed
    root = ET.parse(write_junit(comparison, candidate, tmp_path / "j.xml")).getroot()
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["mode"] == "A/B" and properties["against"] == "/venv-base/bin/python"
    failed = {case.get("name") for case in root.iter("testcase") if case.find("failure") is not None}
    assert failed == {"step_s"}
    assert "paired ratio" in root.find(".//failure").get("message")
    write_history(tmp_path / "h", candidate, comparison, baseline)
    [entry] = load_history(tmp_path / "h", "tiny")
    assert entry.mode == AB
    saved = json.loads(entry.path.read_text())
    assert saved["baseline_record"]["cases"]["a"]["samples"]["step_s"] == baseline.cases["a"].samples["step_s"]
    assert saved["comparison"]["rows"][0]["comparison"]["method"] == PAIRED
    frame = trend_frame([entry])
    assert set(frame.loc[frame["metric"] == "step_s", "verdict"]) == {REGRESSED}


def test_the_trend_page_says_a_b_and_which_test(tmp_path, suite):
    baseline, candidate = ab_records(1.3)
    write_history(tmp_path / "h", candidate, compare_records(baseline, candidate, suite, paired=True), baseline)
    page = write_trend(load_history(tmp_path / "h", "tiny"), tmp_path / "t.html").read_text()
    assert "(A/B)" in page and "Wilcoxon signed-rank" in page and "paired ratio" in page


def one_line_exit_2(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoscale: error:") and "\n" not in err
    return err


def test_against_a_missing_interpreter_exits_2_before_any_trial(tmp_path, capsys, suite):
    err = one_line_exit_2(capsys, ["bench", "--suite", str(suite.path), "--against",
                                   str(tmp_path / "nope" / "python"), "--history", str(tmp_path / "h")])
    assert "--against" in err and "no such file" in err and not (tmp_path / "h").exists()


def test_against_an_interpreter_without_autoscale_exits_2(tmp_path, capsys, suite):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"No module named autoscale\" >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    err = one_line_exit_2(capsys, ["bench", "--suite", str(suite.path), "--against", str(fake),
                                   "--history", str(tmp_path / "h")])
    assert "cannot run autoscale.bench.one_repeat" in err and "No module named autoscale" in err


def test_against_a_file_that_is_not_executable_exits_2(tmp_path, capsys, suite):
    plain = tmp_path / "python"
    plain.write_text("")
    os.chmod(plain, 0o644)
    assert "not executable" in one_line_exit_2(capsys, ["bench", "--suite", str(suite.path), "--against", str(plain)])


def test_against_and_baseline_together_exit_2(tmp_path, capsys, suite):
    err = one_line_exit_2(capsys, ["bench", "--suite", str(suite.path), "--against", "/usr/bin/python3",
                                   "--baseline", str(tmp_path / "b.json")])
    assert "--against" in err and "--baseline" in err


def test_one_repeat_probe_names_its_environment():
    from autoscale.bench.one_repeat import main as one_repeat

    assert one_repeat(["--probe"]) == 0


def test_one_repeat_without_its_flags_is_one_line_exit_2(capsys, tmp_path):
    from autoscale.bench.one_repeat import main as one_repeat

    assert one_repeat(["--suite", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --case is required (or pass --probe)"


@pytest.mark.parametrize("kernels, problem", [
    ("{json: k.json}", "read from a file"),
    ("{command: 'pytest --pyargs autoscale.kernels.bench'}", "must start with python"),
])
def test_a_b_kernels_need_a_command_each_side_can_run_with_its_interpreter(tmp_path, capsys, kernels, problem):
    suite = tmp_path / "k.yaml"
    suite.write_text(f"name: k\nbackend: cpu\nkernels: {kernels}\n")
    err = one_line_exit_2(capsys, ["bench", "--suite", str(suite), "--against", sys.executable,
                                   "--history", str(tmp_path / "h")])
    assert problem in err and "kernels" in err and not (tmp_path / "h").exists()


def fake_rounds(monkeypatch, ratios: list[float]):
    """Paced rounds without processes: round i gives the candidate `ratios[i]` times the baseline's step."""
    from autoscale.bench import ab

    played = []
    monkeypatch.setattr(ab, "start_side", lambda name, command, *, folder, env: name)

    def paced_round(sides, *, turns, ready_timeout_s):
        ratio = ratios[len(played) % len(ratios)]
        played.append(ratio)
        return {BASELINE: {"step_s": STEP_S}, CANDIDATE: {"step_s": STEP_S * ratio}}, None

    monkeypatch.setattr(ab, "paced_round", paced_round)
    return played


def paced(suite, tmp_path, **overrides):
    from dataclasses import replace

    from autoscale.bench.ab import NO_SLOWDOWN, run_paced_case

    case = replace(suite.cases[0], **overrides)
    return run_paced_case(case, suite, against=sys.executable, workdir=tmp_path, observer=None,
                          slowdown=NO_SLOWDOWN)


def test_a_b_rounds_stop_at_the_fewest_once_every_verdict_is_decided(suite, tmp_path, monkeypatch):
    played = fake_rounds(monkeypatch, [1.0, 1.003, 0.998, 1.001])
    samples = paced(suite, tmp_path, rounds=8, max_rounds=24)
    assert len(played) == 8 and len(samples[CANDIDATE].samples["step_s"]) == 8


def test_a_b_rounds_are_added_while_the_interval_straddles_the_threshold(suite, tmp_path, monkeypatch):
    played = fake_rounds(monkeypatch, [0.95, 1.16, 1.0, 1.12, 0.97, 1.10])
    paced(suite, tmp_path, rounds=8, max_rounds=20)
    assert len(played) > 8


def test_a_b_rounds_end_with_their_time_budget_and_the_verdict_is_inconclusive(suite, tmp_path, monkeypatch):
    played = fake_rounds(monkeypatch, [0.95, 1.16, 1.0, 1.12, 0.97, 1.10])
    samples = paced(suite, tmp_path, rounds=8, max_rounds=20, budget_s=0.0)
    assert len(played) == 8
    result = compare_paired(samples[BASELINE].samples["step_s"], samples[CANDIDATE].samples["step_s"],
                            higher_is_better=False, threshold=0.05)
    assert result.verdict == INCONCLUSIVE
