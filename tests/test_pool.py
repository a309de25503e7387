"""The warm pool: trials after other trials measure the same as trials on their own."""

import pytest

from autoscale.engine import TrialRequest, WarmPool
from autoscale.models import PRESETS
from autoscale.point import Point

pytestmark = pytest.mark.slow


def request(tmp_path, quick_measure, name, *, nproc=2, fault=None, timeout_s=120.0, **knobs):
    fields = dict(zero_stage=0, micro_batch=4, grad_accum=2)
    fields.update(knobs)
    return TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(**fields), seq_len=64, nproc=nproc,
                        workdir=tmp_path / name, measure=quick_measure, fault=fault, timeout_s=timeout_s)


@pytest.mark.nightly
def test_the_same_point_after_different_predecessors_has_the_same_peak_memory(tmp_path, quick_measure):
    with WarmPool(tmp_path / "pool") as pool:
        first = pool(request(tmp_path, quick_measure, "first"))
        pool(request(tmp_path, quick_measure, "big", zero_stage=3, micro_batch=8, grad_accum=1, precision="bf16"))
        after_zero3 = pool(request(tmp_path, quick_measure, "after"))
    assert first.ok and after_zero3.ok
    assert after_zero3.peak_bytes == pytest.approx(first.peak_bytes, rel=0.02)
    assert pool.starts == 1


def test_a_failed_trial_costs_only_its_own_ranks(tmp_path, quick_measure):
    with WarmPool(tmp_path / "pool") as pool:
        crashed = pool(request(tmp_path, quick_measure, "crash", fault="crash"))
        nan = pool(request(tmp_path, quick_measure, "nan", fault="nan"))
        after = pool(request(tmp_path, quick_measure, "after"))
    assert crashed.reason.startswith("crash: rank0: RuntimeError: injected crash")
    assert nan.reason.startswith("nan:")
    assert after.ok and pool.starts == 1


@pytest.mark.nightly
def test_a_hung_trial_is_killed_and_the_next_trial_gets_a_fresh_pool(tmp_path, quick_measure):
    with WarmPool(tmp_path / "pool") as pool:
        hung = pool(request(tmp_path, quick_measure, "hang", fault="hang", timeout_s=20))
        after = pool(request(tmp_path, quick_measure, "after"))
    assert hung.reason.startswith("timeout:") and after.ok
    assert pool.starts == 2


@pytest.mark.nightly
def test_another_world_size_starts_another_pool_and_each_start_counts_apart_from_the_trials(tmp_path, quick_measure):
    with WarmPool(tmp_path / "pool") as pool:
        two = pool(request(tmp_path, quick_measure, "two"))
        first_start_s = pool.pool_start_s
        one = pool(request(tmp_path, quick_measure, "one", nproc=1, micro_batch=8))
    assert two.ok and one.ok and len(one.peak_bytes_per_rank) == 1
    assert pool.starts == 2 and 0 < first_start_s < pool.pool_start_s  # the servers' imports, not in wall_s
    assert two.phases.start_s < first_start_s
