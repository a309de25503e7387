"""A CPU rank's memory cap: a trial that allocates past its rank's share fails as oom; others run."""

import resource

import pytest

from autoscale.budget import MemoryBudget
from autoscale.engine import TrialRequest, WarmPool, run_trial
from autoscale.ds_config import BUCKET_ELEMENTS
from autoscale.engine.memcap import MECHANISM, apply_memory_cap, untouched_bucket_bytes
from autoscale.models import PRESETS
from autoscale.point import Point
from autoscale.session import TuneSession

SMALL_CAP_BYTES = 64 << 20  # gpt-tiny's model, optimizer and activations at micro-batch 8 need several times this
NORMAL_CAP_BYTES = 2 << 30


def request(tmp_path, quick_measure, name, *, memory_cap_bytes, backend="cpu", **knobs):
    fields = dict(zero_stage=0, micro_batch=8, grad_accum=1)
    fields.update(knobs)
    return TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(**fields), seq_len=64, nproc=2, backend=backend,
                        workdir=tmp_path / name, measure=quick_measure, memory_cap_bytes=memory_cap_bytes)


def test_a_cpu_session_caps_each_rank_at_its_share_of_the_host_and_records_it(tmp_path):
    session = TuneSession.from_flags(model="gpt-tiny", trials=1, space="default", global_batch=16, seq_len=64,
                                     backend="cpu", nproc=2, out=tmp_path / "run", study_name=None,
                                     timeout_per_trial=60.0, storage=None, resume=False, seed=0, command=[])
    share = MemoryBudget.for_hardware(session.hardware, 2).device_bytes
    assert session.config.memory_cap_bytes_per_rank == share
    assert session.info.memory_cap["limit_bytes_per_rank"] == share
    assert session.info.memory_cap["mechanism"] == MECHANISM


def test_a_gpu_rank_is_never_capped(tmp_path, quick_measure):
    before = resource.getrlimit(resource.RLIMIT_DATA)
    assert MemoryBudget(80 << 30).cap_bytes("cuda") is None
    assert apply_memory_cap(request(tmp_path, quick_measure, "gpu", memory_cap_bytes=1 << 20, backend="cuda")) is None
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


def test_the_headroom_is_the_zero_buckets_a_cpu_reserves_but_never_writes(tmp_path, quick_measure):
    params = PRESETS["gpt-tiny"].param_count()
    offloaded = request(tmp_path, quick_measure, "z2", memory_cap_bytes=1, zero_stage=2, offload="cpu")
    assert untouched_bucket_bytes(offloaded) == 2 * BUCKET_ELEMENTS * 4 - params * 4  # two fp32 buckets, one written
    assert untouched_bucket_bytes(request(tmp_path, quick_measure, "z0", memory_cap_bytes=1)) == 0


@pytest.mark.slow
def test_a_warm_trial_past_its_cap_fails_as_oom_and_the_next_trial_runs(tmp_path, quick_measure):
    with WarmPool(tmp_path / "pool") as pool:
        capped = pool(request(tmp_path, quick_measure, "capped", memory_cap_bytes=SMALL_CAP_BYTES))
        normal = pool(request(tmp_path, quick_measure, "normal", memory_cap_bytes=NORMAL_CAP_BYTES))
    assert capped.reason.startswith("oom: rank") and "memory cap 64 MiB per rank (RLIMIT_DATA" in capped.reason
    assert normal.ok, normal.reason
    assert pool.starts == 1


@pytest.mark.nightly
@pytest.mark.slow
def test_a_fresh_trial_past_its_cap_fails_as_oom(tmp_path, quick_measure):
    capped = run_trial(request(tmp_path, quick_measure, "capped", memory_cap_bytes=SMALL_CAP_BYTES))
    assert capped.reason.startswith("oom: rank") and "memory cap 64 MiB per rank (RLIMIT_DATA" in capped.reason
