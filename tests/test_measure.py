"""Peak memory as a GPU user sees it, and failure kinds from the messages CUDA libraries raise.

No GPU here: NVML is a stand-in module with pynvml's names, and the allocator's figure a stand-in
for `torch.cuda.max_memory_reserved`.
"""

from types import SimpleNamespace

import pytest
import torch

from autoscale.engine import measure
from autoscale.engine.measure import DevicePeak, nvml_process_used_bytes
from autoscale.engine.rank import classify
from autoscale.engine.step_loop import NonFiniteLoss

GIB = 2**30
UUID = "GPU-0c3e0b5a-0000-1111-2222-333344445555"


class FakeNVML:
    """pynvml's calls this engine makes, answering from a table of per-process usage."""

    class NVMLError(Exception):
        pass

    def __init__(self, usage_by_pid: dict[int, int | None], uuid: str = UUID):
        self.usage_by_pid, self.uuid = usage_by_pid, uuid

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid != self.uuid:
            raise self.NVMLError("not found")
        return object()

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.usage_by_pid.items()]


def test_nvml_reports_the_device_memory_of_this_process_only():
    nvml = FakeNVML({100: 3 * GIB, 200: 9 * GIB})
    assert nvml_process_used_bytes(nvml, UUID, 100) == 3 * GIB


@pytest.mark.parametrize("usage, uuid", [({200: GIB}, UUID), ({100: None}, UUID), ({100: GIB}, "GPU-other")],
                         ids=["process-not-listed", "figure-withheld", "unknown-device"])
def test_nvml_says_nothing_where_it_cannot_see_the_process(usage, uuid):
    assert nvml_process_used_bytes(FakeNVML(usage), uuid, 100) is None


def test_on_cuda_the_limit_compares_nvml_s_peak_and_the_allocator_s_is_kept_beside_it(monkeypatch):
    monkeypatch.setattr(measure, "peak_memory_bytes", lambda backend: 5 * GIB)
    nvml = FakeNVML({100: 6 * GIB})
    peak = DevicePeak(nvml=nvml, device_uuid=UUID, pid=100)
    peak.sample()
    nvml.usage_by_pid[100] = 7 * GIB
    peak.sample()
    nvml.usage_by_pid[100] = 6 * GIB  # after the peak
    peak.sample()
    assert peak.figures("cuda") == (7 * GIB, 5 * GIB)


def test_without_nvml_the_allocator_s_peak_is_the_figure(monkeypatch):
    monkeypatch.setattr(measure, "peak_memory_bytes", lambda backend: 5 * GIB)
    peak = DevicePeak(nvml=None, device_uuid=None, pid=100)
    peak.sample()
    assert peak.figures("cuda") == (5 * GIB, 5 * GIB)


def test_on_cpu_the_figure_is_the_resident_peak_and_there_is_no_allocator_figure():
    peak = DevicePeak.for_backend("cpu", 0)
    resident, allocator = peak.figures("cpu")
    assert resident > 10 * 2**20 and allocator is None


@pytest.mark.parametrize("message", [
    "NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error, NCCL version 2.21.5\n"
    "Last error:\nFailed to CUDA calloc async 4194304 bytes",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "CUDA error: cudaErrorMemoryAllocation",
    "NCCL WARN Cuda failure 'out of memory'",
], ids=["nccl-calloc", "cublas-alloc", "cuda-runtime", "nccl-cuda-failure"])
def test_allocation_failures_raised_as_runtime_errors_are_oom(message):
    assert classify(RuntimeError(message)) == "oom"


def test_torch_s_out_of_memory_error_is_oom():
    assert classify(torch.OutOfMemoryError("Tried to allocate 2.00 GiB")) == "oom"


def test_a_collective_ended_by_nccl_s_watchdog_is_a_timeout():
    message = ("[Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLREDUCE, "
               "NumelIn=1, NumelOut=1, Timeout(ms)=48000) ran for 48012 milliseconds before timing out.")
    assert classify(RuntimeError(message)) == "timeout"


@pytest.mark.parametrize("error, kind", [(NonFiniteLoss("loss is nan"), "nan"),
                                         (RuntimeError("CUDA error: an illegal memory access"), "crash")])
def test_other_failures_keep_their_kind(error, kind):
    assert classify(error) == kind


def test_the_trial_reports_the_largest_rank_s_figure_and_allocator_peak():
    from autoscale.engine.rank import summarise
    from autoscale.engine.request import TrialRequest, TrialResult
    from autoscale.engine.step_loop import RankOutcome
    from autoscale.models import PRESETS
    from autoscale.point import Point

    request = TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(zero_stage=0, micro_batch=2, grad_accum=1),
                           seq_len=32, backend="cuda", nproc=2)
    outcome = RankOutcome(step_times_s=[0.1, 0.1], loss=1.0, peak_bytes_per_rank=[7 * GIB, 8 * GIB],
                          peak_allocator_bytes_per_rank=[6 * GIB, 5 * GIB], train_start_time=1.0)
    result = TrialResult.from_dict(summarise(request, outcome, world_size=2, launch_time=0.0,
                                             peak_flops_per_device=1e15, devices=2))
    assert (result.peak_bytes, result.peak_allocator_bytes) == (8 * GIB, 6 * GIB)


def test_a_result_recorded_before_the_allocator_figure_existed_still_loads():
    from autoscale.engine.request import TrialResult

    result = TrialResult.from_dict({"status": "ok", "peak_bytes": 5 * GIB, "peak_bytes_per_rank": [5 * GIB]})
    assert result.peak_bytes == 5 * GIB and result.peak_allocator_bytes is None


def test_a_cpu_rank_never_loads_deepspeed_s_shared_memory_op(monkeypatch):
    """Its JIT build on a fresh machine would run inside the first trial; the op serves only ranks with LOCAL_SIZE."""
    import importlib

    import deepspeed

    from autoscale.engine.rank import init_distributed

    torch_comm = importlib.import_module("deepspeed.comm.torch")
    original = torch_comm.build_shm_op
    monkeypatch.setattr(torch_comm, "build_shm_op", original)  # restored after the test
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **_: None)
    init_distributed("cpu", trial_timeout_s=10.0)
    assert torch_comm.build_shm_op is not original and torch_comm.build_shm_op() is None


def test_the_gate_s_timed_steps_are_past_the_warm_up_and_never_more_than_max_steps():
    from autoscale.engine import MeasurePolicy, TrialRequest
    from autoscale.engine.numerics import GATE_STEPS
    from autoscale.engine.step_loop import StepTimes
    from autoscale.models import PRESETS
    from autoscale.point import Point

    def timed(**policy) -> int:
        request = TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(), seq_len=8, measure=MeasurePolicy(**policy))
        times = StepTimes()
        for index in range(GATE_STEPS):
            with times.step(request, index):
                pass
        return len(times.wall)

    assert timed(warmup_steps=2, max_steps=10) == GATE_STEPS - 2
    assert timed(warmup_steps=0, max_steps=1) == 1  # the gate's last step, not its first
    assert timed(warmup_steps=GATE_STEPS, max_steps=10) == 0
