"""Shared fixtures: everything runs on CPU with DeepSpeed's CPU accelerator and 2 gloo ranks.

In CI (`AUTOSCALE_CI=1`, set by .ci/run) a skipped test fails the run: every service and optional
library a test needs is installed there, so a skip means a set-up that broke silently, and a green CI
that skipped the browser, PostgreSQL or Slurm tests would prove nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest  # noqa: E402

from autoscale.engine import MeasurePolicy  # noqa: E402

# Few steps: tests check behaviour, benchmarks measure speed.
QUICK = MeasurePolicy(warmup_steps=1, min_steps=2, max_steps=3, target_rse=1.0, max_measure_s=20)


@pytest.fixture
def quick_measure() -> MeasurePolicy:
    return QUICK


def pytest_sessionfinish(session, exitstatus) -> None:
    if not os.environ.get("AUTOSCALE_CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if not skipped:
        return
    reporter.ensure_newline()
    reporter.write_line(f"AUTOSCALE_CI: {len(skipped)} test(s) skipped, which CI counts as failures:", red=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reporter.write_line(f"  {report.nodeid}: {reason}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
