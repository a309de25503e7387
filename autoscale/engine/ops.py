"""DeepSpeed's compiled ops a trial needs, built before the trial starts rather than inside it.

DeepSpeed compiles some ops on first use into torch's extension cache: on CPU its shared-memory
collectives (every trial's process group) and CPU Adam (optimizer offload), minutes here. A trial
that did so would spend its clock and timeout compiling. So before the first trial that needs an op
missing from the cache, one child process builds it with the ranks' environment, under its own time
limit, saying so on the console; every rank then loads it from the cache. A cached op costs nothing here.

torch serialises those builds with a `lock` file in the op's cache folder (`FileBaton`), which a
killed build leaves behind; every later load then waits on it until its trial times out. Such a
lock is found before a study starts and refused in one line (`check_build_locks`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from autoscale.engine.environment import accelerator_environment
from autoscale.engine.outcome import last_line_of
from autoscale.engine.request import TrialRequest
from autoscale.errors import UserError

OP_BUILD_TIMEOUT_S = 1200.0
PROGRESS_EVERY_S = 30.0
_ready: set[tuple[str, str]] = set()  # (op, backend) built or loaded by this process


def _say(line: str) -> None:
    print(f"autoscale: {line}", file=sys.stderr, flush=True)


def extension_build_root() -> Path:
    """Where torch builds and caches extensions (`torch.utils.cpp_extension.get_default_build_root`,
    restated so the parent process need not import torch to look)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.path.realpath(os.path.join(cache, "torch_extensions")))


def is_cached(op: str, backend: str, root: Path | None = None) -> bool:
    """Whether torch's cache holds `op` built for this Python and, on CPU, a CPU torch (`pyXY_cpu`; a
    CUDA torch builds into `pyXY_cuNNN`)."""
    root = root or extension_build_root()
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return any(root.glob(f"{python}_{'cpu' if backend == 'cpu' else 'cu*'}/{op}/{op}.so"))


def _folders_in_use(root: Path) -> set[Path]:
    """The op folders under `root` that a live process works in (a build's compiler and ninja run there)."""
    in_use = set()
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info.get("cwd")
        if cwd and Path(cwd).is_relative_to(root):
            in_use.add(Path(cwd))
    return in_use


def stale_build_locks(root: Path | None = None, *, min_age_s: float = 60.0) -> list[Path]:
    """Build locks that no running build holds: older than `min_age_s` (a build just starting may not
    have started its compiler yet) while no live process works in the op's folder."""
    root = root or extension_build_root()
    locks = [*root.glob("*/*/lock"), *root.glob("*/lock")]
    if not locks:
        return []
    in_use = _folders_in_use(root)
    now = time.time()
    return [lock for lock in locks if now - lock.stat().st_mtime > min_age_s
            and not any(folder.is_relative_to(lock.parent) for folder in in_use)]


def check_build_locks(root: Path | None = None) -> None:
    """Refuse, in one line naming the file, a build lock left by a killed build: every trial that loads
    that op would otherwise wait on it until its timeout."""
    stale = stale_build_locks(root)
    if stale:
        raise UserError(f"{stale[0]} was left by a DeepSpeed op build that is no longer running, and every trial "
                        f"that loads the op would wait on it: remove it (rm {stale[0]}) and run again")


@dataclass(frozen=True)
class CompiledOp:
    """A DeepSpeed op that is compiled on first use: `name` is its folder in torch's extension cache."""

    name: str
    label: str
    builder: str  # DeepSpeed's op-builder class, made by the accelerator
    needed: Callable[[TrialRequest], bool]
    build_time: str  # what a first build costs here, for the console

    def build_command(self) -> list[str]:
        return [sys.executable, "-c", "from deepspeed.accelerator import get_accelerator; "
                f"get_accelerator().create_op_builder({self.builder!r}).load(verbose=False)"]


OPS = (
    CompiledOp("deepspeed_shm_comm", "shared-memory collectives op (every CPU trial's process group loads it)",
               "ShareMemCommBuilder", lambda request: request.backend == "cpu", "measured: 302 s on 2 busy cores"),
    CompiledOp("cpu_adam", "CPU Adam op for the optimizer offload", "CPUAdamBuilder",
               lambda request: request.point.offload != "none", "about 3 minutes on 2 quiet cores"),
)


def prepare_ops(request: TrialRequest, say: Callable[[str], None] = _say) -> str | None:
    """Build every compiled op the trial needs that torch's cache lacks, once per process and backend;
    None when ready, else the failure reason for the trial."""
    for op in OPS:
        if op.needed(request) and (op.name, request.backend) not in _ready:
            reason = None if is_cached(op.name, request.backend) else _build(op, request.backend, say)
            if reason is not None:
                return reason
            _ready.add((op.name, request.backend))
    return None


def _build(op: CompiledOp, backend: str, say: Callable[[str], None]) -> str | None:
    """One child process builds the op with the ranks' environment, announced, with its progress every
    `PROGRESS_EVERY_S`."""
    say(f"building DeepSpeed's {op.label} (once per machine; {op.build_time}), before any trial's clock "
        f"starts; cached in {extension_build_root()}")
    env = {**os.environ, **accelerator_environment(backend)}
    start = time.monotonic()
    with subprocess.Popen(op.build_command(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as build:
        while True:
            try:
                _, stderr = build.communicate(timeout=PROGRESS_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed > OP_BUILD_TIMEOUT_S:
                    build.kill()
                    return f"crash: DeepSpeed's {op.name} op was not built within {OP_BUILD_TIMEOUT_S:.0f} s"
                say(f"still building DeepSpeed's {op.name} op ({elapsed:.0f} s)")
    if build.returncode != 0:
        return f"crash: DeepSpeed's {op.name} op could not be built: {last_line_of(stderr)}"
    say(f"DeepSpeed's {op.name} op built in {time.monotonic() - start:.0f} s")
    return None
