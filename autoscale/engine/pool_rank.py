"""A warm rank: a fork server that has imported torch and DeepSpeed once, and forks one child per trial.

Run as `python -m autoscale.engine.pool_rank BACKEND` with the torch.distributed environment. Each
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

import torch  # noqa: F401 - imported once here, inherited by every child

import deepspeed  # noqa: F401,E402

from autoscale.engine.launch import die_with_parent  # noqa: E402
from autoscale.engine.rank import init_distributed, record_failure, run_rank  # noqa: E402
from autoscale.engine.request import TrialRequest  # noqa: E402


def _child(command: dict, rank: int) -> int:
    """One trial in a forked child; its exit code says whether it succeeded."""
    die_with_parent()
    result_path = Path(command["result"])
    log = os.open(result_path.parent / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ["MASTER_PORT"] = str(command["port"])
    request = TrialRequest.from_json(Path(command["request"]).read_text())
    try:
        init_distributed(request.backend)
    except BaseException as error:  # noqa: BLE001
        record_failure(error, result_path.parent, rank)
        return 3
    return 0 if run_rank(request, result_path, launch_time=command["sent_at"]) else 3


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
    from kernels import get_kernel_set

    get_kernel_set("torch")


def serve() -> int:
    rank = int(os.environ["RANK"])
    _warm_up()
    (Path(os.environ["AUTOSCALE_POOL_DIR"]) / f"ready-rank{rank}").touch()  # the pool's clock starts here
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("exit"):
            return 0
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                code = _child(command, rank)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        done = Path(command["result"]).parent / f"rank{rank}.done"
        code = os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        partial = done.with_name(done.name + ".tmp")
        partial.write_text("ok" if ok else f"failed {code}")
        os.replace(partial, done)  # atomic: the parent polls for this file and must never read it half-written
    return 0


if __name__ == "__main__":
    sys.exit(serve())
