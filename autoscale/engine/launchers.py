"""The ways to start a trial's ranks, by name: each opens a runner (`TrialRequest -> TrialResult`)
for one study and cleans up after it.

A new launcher is a `Launcher` subclass and one `register` line. Each runner returns results
through `outcome.py`, so a failure reads the same whichever launcher ran the trial.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from autoscale.engine.environment import accelerator_environment
from autoscale.engine.launch import run_trial
from autoscale.engine.request import TrialRequest, TrialResult
from autoscale.errors import UserError

Runner = Callable[[TrialRequest], TrialResult]


@dataclass(frozen=True, kw_only=True)
class RunnerSetup:
    """What a launcher needs to know about the study it serves."""

    run_dir: Path  # the study's folder; the warm pool keeps its server logs under run_dir/pool
    backend: str
    hostfile: str | Path | None = None  # launcher "hostfile" only
    master_addr: str | None = None  # launcher "hostfile": how the other nodes reach this one; default: its FQDN
    on_fallback: Callable[[str], None] | None = None  # launcher "warm": told, in one line, when it turns fresh
    slurm_args: tuple[str, ...] = ()  # launcher "slurm": srun options, e.g. for an allocation of its own


class Launcher:
    """One way to start ranks. `selectable`: named with `--launcher` (else chosen by another flag)."""

    name: str
    help: str
    selectable = True

    def open(self, setup: RunnerSetup) -> ContextManager[Runner]:
        raise NotImplementedError


class Fresh(Launcher):
    name, help = "fresh", "new processes for every trial"

    @contextmanager
    def open(self, setup: RunnerSetup) -> Iterator[Runner]:
        yield run_trial


class Warm(Launcher):
    name, help = "warm", "ranks kept as fork servers across trials (fast); fresh ones if CUDA fails to start in them"

    @contextmanager
    def open(self, setup: RunnerSetup) -> Iterator[Runner]:
        from autoscale.engine.fallback import FallbackToFresh
        from autoscale.engine.pool import WarmPool

        with WarmPool(setup.run_dir / "pool") as pool:
            yield FallbackToFresh(pool, run_trial, on_fallback=setup.on_fallback, close_warm=pool.close)


class Hostfile(Launcher):
    name, help = "hostfile", "DeepSpeed's launcher across the nodes of --hostfile"
    selectable = False

    @contextmanager
    def open(self, setup: RunnerSetup) -> Iterator[Runner]:
        from autoscale.engine.multinode import HostfileRunner

        if setup.hostfile is None:
            raise UserError("the hostfile launcher needs --hostfile")
        yield HostfileRunner(setup.hostfile, master_addr=setup.master_addr or socket.getfqdn(),
                             extra_env=accelerator_environment(setup.backend))


class Slurm(Launcher):
    name, help = "slurm", "an srun job step per trial, in the current Slurm allocation or a new one (--slurm-args)"

    @contextmanager
    def open(self, setup: RunnerSetup) -> Iterator[Runner]:
        from autoscale.engine.slurm import SlurmRunner, check_srun

        check_srun()
        yield SlurmRunner(slurm_args=setup.slurm_args)


LAUNCHERS: dict[str, Launcher] = {}


def register(launcher: Launcher) -> Launcher:
    LAUNCHERS[launcher.name] = launcher
    return launcher


register(Warm())
register(Fresh())
register(Hostfile())
register(Slurm())


def selectable_launchers() -> tuple[str, ...]:
    """The names `--launcher` accepts, the default first."""
    return tuple(name for name, launcher in LAUNCHERS.items() if launcher.selectable)


def open_runner(name: str, **setup) -> ContextManager[Runner]:
    """The runner of launcher `name` for one study, as a context manager: `with open_runner(...) as run:`.
    Keywords are `RunnerSetup`'s fields."""
    if name not in LAUNCHERS:
        raise UserError(f"--launcher must be one of {', '.join(selectable_launchers())}, got {name!r}")
    return LAUNCHERS[name].open(RunnerSetup(**setup))
