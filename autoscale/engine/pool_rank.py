"""A warm rank: a fork server that has imported torch and DeepSpeed once, and forks one child per trial.

Run as `python -m autoscale.engine.pool_rank BACKEND` with the torch.distributed environment. The
server must never initialise the CUDA driver, which a forked child cannot use after its parent did:
it names the accelerator for DeepSpeed and has torch ask NVML (`environment.accelerator_environment`)
before torch is imported, and checks that CUDA is still uninitialised before every fork. Each
line on stdin is a JSON command `{"request": path, "result": path, "port": int, "sent_at": time}`
(or `{"exit": true}`). For each, the server forks; the child joins a fresh process group on the
given port, trains and measures exactly as a fresh rank does (`rank.run_rank`) and exits. Why a
fork server rather than one long-lived DeepSpeed process: every child starts from the same
memory image, so a trial's peak memory cannot depend on what the previous trial left behind
(allocator caches, imported ZeRO-3 machinery), and a crashed trial takes only its child down.
The server writes `rank<r>.done` ("ok" or "failed") when the child is gone.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from autoscale.engine.environment import accelerator_environment
from autoscale.engine.launch import die_with_parent

if __name__ == "__main__":
    os.environ.update(accelerator_environment(sys.argv[1]))

import torch  # noqa: E402 - imported once here, after the environment above, inherited by every child

import deepspeed  # noqa: F401,E402

from autoscale.engine.rank import record_failure, run_rank_process  # noqa: E402
from autoscale.engine.request import RANK_FAILED_EXIT_CODE  # noqa: E402


class CudaInitialisedBeforeFork(RuntimeError):
    pass


def _child(command: dict, rank: int) -> int:
    """One trial in a forked child; its exit code says whether it succeeded."""
    die_with_parent()
    result_path = Path(command["result"])
    log = os.open(result_path.parent / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ["MASTER_PORT"] = str(command["port"])
    return run_rank_process(Path(command["request"]), result_path, launch_time=command["sent_at"])


def _warm_up() -> None:
    """Import and load, once, everything a trial would otherwise load in each child."""
    import deepspeed.runtime.bf16_optimizer  # noqa: F401
    import deepspeed.runtime.engine  # noqa: F401
    import deepspeed.runtime.zero.stage3  # noqa: F401
    import deepspeed.runtime.zero.stage_1_and_2  # noqa: F401
    import deepspeed.runtime.zero.utils  # noqa: F401
    import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: F401 - imported lazily by the optimizer check, 1 s

    import autoscale.hardware  # noqa: F401
    import autoscale.models.gpt  # noqa: F401
    from autoscale.kernels import get_kernel_set

    get_kernel_set("torch")


def serve() -> int:
    rank = int(os.environ["RANK"])
    _warm_up()
    (Path(os.environ["AUTOSCALE_POOL_DIR"]) / f"ready-rank{rank}").touch()  # the pool's clock starts here
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("exit"):
            return 0
        workdir = Path(command["result"]).parent
        if torch.cuda.is_initialized():
            record_failure(CudaInitialisedBeforeFork("the fork server initialised CUDA: a forked trial could not "
                                                     "use it"), workdir, rank)
            _report_done(workdir, rank, f"failed {RANK_FAILED_EXIT_CODE}")
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = RANK_FAILED_EXIT_CODE
            try:
                code = _child(command, rank)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        code = os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _report_done(workdir, rank, "ok" if ok else f"failed {code}")
    return 0


def _report_done(workdir: Path, rank: int, status: str) -> None:
    """Atomically: the parent polls for `rank<r>.done` and must never read it half-written."""
    done = workdir / f"rank{rank}.done"
    partial = done.with_name(done.name + ".tmp")
    partial.write_text(status)
    os.replace(partial, done)


if __name__ == "__main__":
    sys.exit(serve())
