"""The warm fork server never initialises the CUDA driver: a child forked after that could not use CUDA.

No GPU here, so the server runs with the torch entry points that initialise the driver replaced by
recorders, installed in the server process through a `sitecustomize` on PYTHONPATH. NVML reports
one device (as on a GPU host) or fails (as on MIG slices, or where the NVML library is not
reachable), so DeepSpeed's accelerator choice, the imports and the warm-up take the paths they
would take on a CUDA build. A recorded call in the server's own process is a driver
initialisation before a fork; calls in the forked trial children are allowed.
"""

from __future__ import annotations

import json
import os

import pytest

from autoscale.engine import TrialRequest, TrialResult, WarmPool
from autoscale.engine.fallback import FallbackToFresh
from autoscale.models import PRESETS
from autoscale.point import Point

pytestmark = pytest.mark.slow

CALL_LOG_ENV = "AUTOSCALE_TEST_CUDA_CALL_LOG"
NVML_DEVICES_ENV = "AUTOSCALE_TEST_NVML_DEVICES"
INITIALISED_ENV = "AUTOSCALE_TEST_CUDA_INITIALISED"

RECORDER = f'''
import os

if os.environ.get("{CALL_LOG_ENV}"):
    import json
    import traceback

    import torch
    import torch.cuda

    def _log(entry):
        with open(os.environ["{CALL_LOG_ENV}"], "a") as log:
            log.write(json.dumps({{"pid": os.getpid(), **entry}}) + "\\n")

    def _recorder(name, returns):
        def record(*args, **kwargs):
            _log({{"call": name, "stack": traceback.format_stack(limit=12)[:-1]}})
            return returns
        return record

    def _cuda_entry_point(name):
        if name.startswith("_cuda_"):  # what a CUDA build of torch._C holds and this one lacks
            return _recorder(f"torch._C.{{name}}", 0)
        raise AttributeError(name)

    torch._C.__getattr__ = _cuda_entry_point
    torch._C._cuda_init = _recorder("torch._C._cuda_init", None)
    torch._C._cuda_getDeviceCount = _recorder("torch._C._cuda_getDeviceCount", 1)
    torch.cuda._lazy_init = _recorder("torch.cuda._lazy_init", None)
    nvml_devices = int(os.environ["{NVML_DEVICES_ENV}"])
    torch.cuda._raw_device_count_nvml = lambda: nvml_devices  # NVML does not initialise the driver
    if os.environ.get("{INITIALISED_ENV}"):
        torch.cuda._initialized = True  # as if something had started the driver in this process
    _log({{"installed": True}})
'''


def recorded(log_path) -> list[dict]:
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def install_recorder(tmp_path, monkeypatch, *, nvml_devices: int):
    """The recorder in every Python process started from here on; returns the log it writes."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORDER)
    log_path = tmp_path / "cuda-calls.jsonl"
    monkeypatch.setenv(CALL_LOG_ENV, str(log_path))
    monkeypatch.setenv(NVML_DEVICES_ENV, str(nvml_devices))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    for inherited in ("DS_ACCELERATOR", "PYTORCH_NVML_BASED_CUDA_CHECK"):
        monkeypatch.delenv(inherited, raising=False)
    return log_path


def cuda_request(tmp_path, measure, name: str = "trial") -> TrialRequest:
    return TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(zero_stage=0, micro_batch=2, grad_accum=1),
                        seq_len=32, backend="cuda", nproc=1, workdir=tmp_path / name, measure=measure, timeout_s=60)


@pytest.mark.nightly
@pytest.mark.parametrize("nvml_devices", [1, -1], ids=["nvml-answers", "nvml-fails"])
def test_the_warm_fork_server_starts_and_forks_without_initialising_cuda(tmp_path, monkeypatch, quick_measure,
                                                                        nvml_devices):
    log_path = install_recorder(tmp_path, monkeypatch, nvml_devices=nvml_devices)
    request = cuda_request(tmp_path, quick_measure)
    with WarmPool(tmp_path / "pool") as pool:
        result = pool.run(request)  # the child cannot train without a GPU: what matters came before the fork
        server_pids = {process.pid for process in pool.processes}
    entries = recorded(log_path)
    assert any(e.get("installed") and e["pid"] in server_pids for e in entries), "the recorder never ran in the server"
    assert (request.workdir / "rank0.log").exists(), f"no trial child was forked: {result.reason}"
    in_server = [e for e in entries if "call" in e and e["pid"] in server_pids]
    assert not in_server, "the fork server initialised CUDA:\n" + "\n".join(
        f"{e['call']} from\n{''.join(e['stack'])}" for e in in_server[:3])


def test_a_server_with_cuda_initialised_refuses_to_fork_and_the_study_goes_on_fresh(tmp_path, monkeypatch,
                                                                                    quick_measure):
    install_recorder(tmp_path, monkeypatch, nvml_devices=1)
    monkeypatch.setenv(INITIALISED_ENV, "1")
    fresh_ran = []

    def fresh(request: TrialRequest) -> TrialResult:
        fresh_ran.append(request.workdir.name)
        return TrialResult(status="ok", tokens_per_s=1.0)

    with WarmPool(tmp_path / "pool") as pool:
        runner = FallbackToFresh(pool, fresh, close_warm=pool.close)
        result = runner(cuda_request(tmp_path, quick_measure))
    assert result.ok and fresh_ran == ["trial"]
    assert runner.fallback["reason"].startswith("crash: rank0: CudaInitialisedBeforeFork: the fork server initialised")
    assert not (tmp_path / "trial" / "rank0.log").exists()  # no child was forked
