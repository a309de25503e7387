"""DeepSpeed's compiled ops a trial needs, built before the trial starts rather than inside it.

DeepSpeed compiles its CPU Adam op on first use (minutes here) into torch's extension cache; a
trial that did so would spend its timeout compiling. So before the first offload trial of a
process, one child process builds (or, once cached, just loads) the op with the ranks'
environment, under its own time limit; every rank then loads it from the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys

from autoscale.engine.launch import accelerator_environment
from autoscale.engine.outcome import last_line_of
from autoscale.engine.request import TrialRequest

OP_BUILD_TIMEOUT_S = 1200.0
_BUILD_CPU_ADAM = "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load(verbose=False)"
_ready_backends: set[str] = set()


def prepare_optimizer_op(request: TrialRequest) -> str | None:
    """Build DeepSpeed's CPU Adam for an offload trial's backend, once per process; None when ready,
    else the failure reason for the trial."""
    if request.point.offload == "none" or request.backend in _ready_backends:
        return None
    env = {**os.environ, **accelerator_environment(request.backend)}
    try:
        subprocess.run([sys.executable, "-c", _BUILD_CPU_ADAM], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=OP_BUILD_TIMEOUT_S, check=True)
    except subprocess.TimeoutExpired:
        return f"crash: DeepSpeed's CPU Adam op was not built within {OP_BUILD_TIMEOUT_S:.0f} s"
    except subprocess.CalledProcessError as error:
        return f"crash: DeepSpeed's CPU Adam op could not be built: {last_line_of(error.stderr)}"
    _ready_backends.add(request.backend)
    return None
