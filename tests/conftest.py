"""Shared fixtures: everything runs on CPU with DeepSpeed's CPU accelerator and 2 gloo ranks."""

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
