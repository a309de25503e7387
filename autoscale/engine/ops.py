"""DeepSpeed's compiled ops a trial needs, built before the trial starts rather than inside it.

DeepSpeed compiles its CPU Adam op on first use (minutes here) into torch's extension cache; a
trial that did so would spend its timeout compiling. So before the first offload trial of a
process, one child process builds (or, once cached, just loads) the op with the ranks'
environment, under its own time limit, saying so on the console; every rank then loads it from the
cache.

torch serialises those builds with a `lock` file in the op's cache folder (`FileBaton`), which a
killed build leaves behind; every later load then waits on it until its trial times out. Such a
lock is found before a study starts and refused in one line (`check_build_locks`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

from autoscale.engine.launch import accelerator_environment
from autoscale.errors import UserError
from autoscale.engine.outcome import last_line_of
from autoscale.engine.request import TrialRequest

OP_BUILD_TIMEOUT_S = 1200.0
PROGRESS_EVERY_S = 30.0
_BUILD_CPU_ADAM = "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load(verbose=False)"
_ready_backends: set[str] = set()


def _say(line: str) -> None:
    print(f"autoscale: {line}", file=sys.stderr, flush=True)


def extension_build_root() -> Path:
    """Where torch builds and caches extensions (`torch.utils.cpp_extension.get_default_build_root`,
    restated so the parent process need not import torch to look)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.path.realpath(os.path.join(cache, "torch_extensions")))


def is_cached(op: str, root: Path | None = None) -> bool:
    root = root or extension_build_root()
    return any(root.glob(f"*/{op}/{op}.so")) or any(root.glob(f"{op}/{op}.so"))


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


def prepare_optimizer_op(request: TrialRequest, say: Callable[[str], None] = _say) -> str | None:
    """Build DeepSpeed's CPU Adam for an offload trial's backend, once per process; None when ready,
    else the failure reason for the trial. A build (not a load from the cache) is announced and its
    progress reported every `PROGRESS_EVERY_S`."""
    if request.point.offload == "none" or request.backend in _ready_backends:
        return None
    building = not is_cached("cpu_adam")
    if building:
        say("building DeepSpeed's CPU Adam op for the optimizer offload (once per machine; about 3 minutes on "
            f"2 cores), before any trial's clock starts; cached in {extension_build_root()}")
    env = {**os.environ, **accelerator_environment(request.backend)}
    start = time.monotonic()
    with subprocess.Popen([sys.executable, "-c", _BUILD_CPU_ADAM], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as build:
        while True:
            try:
                _, stderr = build.communicate(timeout=PROGRESS_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed > OP_BUILD_TIMEOUT_S:
                    build.kill()
                    return f"crash: DeepSpeed's CPU Adam op was not built within {OP_BUILD_TIMEOUT_S:.0f} s"
                if building:
                    say(f"still building DeepSpeed's CPU Adam op ({elapsed:.0f} s)")
    if build.returncode != 0:
        return f"crash: DeepSpeed's CPU Adam op could not be built: {last_line_of(stderr)}"
    if building:
        say(f"DeepSpeed's CPU Adam op built in {time.monotonic() - start:.0f} s")
    _ready_backends.add(request.backend)
    return None
