"""The command line for a trial that spans several nodes: DeepSpeed's own launcher and a hostfile.

On one node `launch.py` starts the ranks itself. Across nodes the ranks have to be started over
ssh, which is what the `deepspeed` launcher (its pdsh backend by default) already does well, so
a multi-node trial is `deepspeed --hostfile FILE ... --module autoscale.engine.rank REQUEST RESULT`.

Everything here is a pure function of its inputs and returns an argument list, never a shell
string. One caveat shapes the checks: DeepSpeed's pdsh backend joins what it sends to the remote
nodes (`export K=V; cd DIR; python -u -m deepspeed.launcher.launch ... ARGS`) into one shell line,
quoting only with double quotes. So every value that reaches that line (hostnames, the master
address, the request and result paths, extra environment values) is refused when it holds a
character the remote shell would still interpret inside double quotes.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoscale.errors import UserError
from autoscale.userfiles import read_user_text

if TYPE_CHECKING:
    from autoscale.engine.request import TrialRequest, TrialResult

RANK_MODULE = "autoscale.engine.rank"
ENV_FILE_NAME = "deepspeed_env"
# RFC 1123 host names and IPv4 addresses, plus `_` (common in cluster names). Nothing that pdsh's
# `-w a,b`, DeepSpeed's `host:slot@host` filters, ssh's options (`-o...`) or a shell could read.
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_HOSTFILE_LINE = re.compile(r"(?P<host>\S+)\s+slots=(?P<slots>\S+)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Still live inside "...": $ (expansion), ` (command), " (ends the quote), \ (escape), ! (history).
_REMOTE_SHELL_ACTIVE = set('$`"\\!\n\r\0')


@dataclass(frozen=True)
class Host:
    name: str
    slots: int  # processes (GPUs) this host may run


@dataclass(frozen=True)
class MultiNodeLaunch:
    """What to run: `subprocess.Popen(argv, env=env)` after writing `env_file_text` to `env_file`."""

    argv: list[str]
    env: dict[str, str]
    env_file: Path  # DeepSpeed exports each KEY=VALUE line of it on every node (its DS_ENV_FILE)
    env_file_text: str
    hosts: tuple[Host, ...]  # the hosts used, in hostfile order
    world_size: int


def parse_hostfile(text: str, origin: str = "hostfile") -> tuple[Host, ...]:
    """DeepSpeed's hostfile format: `host slots=N` per line; `#` comments and blank lines skipped.

    Stricter than DeepSpeed's own reader, which takes any non-blank word as a host and ignores
    trailing text: here a bad line is refused with its number, before any node is contacted.
    """
    hosts: dict[str, Host] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{origin} line {number} ({raw_line.strip()!r})"
        match = _HOSTFILE_LINE.fullmatch(line)
        if match is None:
            raise UserError(f"{where}: expected 'HOST slots=N'")
        name, slots = match["host"], match["slots"]
        if not _HOST.fullmatch(name):
            raise UserError(f"{where}: {name!r} is not a host name or IPv4 address "
                            "(letters, digits, '.', '-', '_'; not starting with '-')")
        if not slots.isdigit() or int(slots) < 1:
            raise UserError(f"{where}: slots must be a positive integer, got {slots!r}")
        if name in hosts:
            raise UserError(f"{where}: host {name!r} is listed twice")
        hosts[name] = Host(name, int(slots))
    if not hosts:
        raise UserError(f"{origin} lists no hosts: write one 'HOST slots=N' line per node")
    return tuple(hosts.values())


def read_hostfile(path: str | Path) -> tuple[Host, ...]:
    path = Path(path)
    text = read_user_text(path, f"--hostfile {str(path)!r}")
    return parse_hostfile(text, origin=f"hostfile {str(path)!r}")


def select_hosts(hosts: tuple[Host, ...], *, num_nodes: int | None = None,
                 num_gpus: int | None = None) -> tuple[tuple[Host, ...], int]:
    """The hosts DeepSpeed will use and the world size, as its `--num_nodes`/`--num_gpus` do:
    the first `num_nodes` hosts of the file, each running `num_gpus` ranks (else its slots)."""
    if num_nodes is not None:
        if not 1 <= num_nodes <= len(hosts):
            raise UserError(f"--num_nodes {num_nodes}: the hostfile lists {len(hosts)} host(s)")
        hosts = hosts[:num_nodes]
    if num_gpus is not None:
        short = next((h for h in hosts if h.slots < num_gpus), None)
        if num_gpus < 1 or short is not None:
            raise UserError(f"--num_gpus {num_gpus}: must be at least 1 and at most every host's slots"
                            + (f" ({short.name} has {short.slots})" if short else ""))
        hosts = tuple(Host(h.name, num_gpus) for h in hosts)
    return hosts, sum(h.slots for h in hosts)


def _remote_safe(value: str, what: str) -> str:
    bad = sorted(set(value) & _REMOTE_SHELL_ACTIVE)
    if bad:
        raise UserError(f"{what} {value!r} holds {''.join(bad)!r}, which DeepSpeed's pdsh launcher would "
                        "pass to the remote shell unescaped: rename it")
    return value


def default_launcher() -> str:
    """The `deepspeed` script installed beside this Python, so every node runs the same install."""
    return str(Path(sys.executable).with_name("deepspeed"))


def build_launch(*, hostfile: str | Path, request_path: str | Path, result_path: str | Path,
                 master_addr: str, master_port: int, extra_env: dict[str, str] | None = None,
                 num_nodes: int | None = None, num_gpus: int | None = None,
                 base_env: dict[str, str] | None = None, env_file: str | Path | None = None,
                 launcher: str | None = None) -> MultiNodeLaunch:
    """The argv and environment of `deepspeed --hostfile ... --module autoscale.engine.rank REQ RES`.

    `--no_local_rank`: the rank module takes exactly REQUEST RESULT and reads LOCAL_RANK from its
    environment, which DeepSpeed's per-node launcher sets. `extra_env` reaches remote ranks only
    through the env file (pdsh does not forward the caller's environment), so it goes both there
    and into the local `env`. `--num_gpus` is left out when hosts have unequal slots (DeepSpeed
    would give every host the same count); each then runs its slots. Paths are made absolute: the remote ranks `cd` to this process's
    working directory, which must exist on every node (a shared filesystem), as must the paths.
    """
    hosts, world_size = select_hosts(read_hostfile(hostfile), num_nodes=num_nodes, num_gpus=num_gpus)
    if not _HOST.fullmatch(master_addr):
        raise UserError(f"--master_addr {master_addr!r} is not a host name or IPv4 address")
    if not 1 <= master_port <= 65535:
        raise UserError(f"--master_port {master_port} is not a TCP port (1-65535)")
    request = _remote_safe(os.path.abspath(request_path), "trial request path")
    result = _remote_safe(os.path.abspath(result_path), "trial result path")
    extra_env = dict(extra_env or {})
    for name, value in extra_env.items():
        if not _ENV_NAME.fullmatch(name):
            raise UserError(f"environment variable name {name!r} is not valid")
        _remote_safe(value, f"environment variable {name}=")
    env_file = Path(os.path.abspath(env_file or Path(request).with_name(ENV_FILE_NAME)))
    env = {**(os.environ if base_env is None else base_env), **extra_env, "DS_ENV_FILE": str(env_file)}
    ranks_per_node = {h.slots for h in hosts}
    per_node = ["--num_gpus", str(ranks_per_node.pop())] if len(ranks_per_node) == 1 else []
    argv = [launcher or default_launcher(), "--hostfile", os.path.abspath(hostfile),
            "--num_nodes", str(len(hosts)), *per_node,
            "--master_addr", master_addr, "--master_port", str(master_port),
            "--no_local_rank", "--module", RANK_MODULE, request, result]
    env_file_text = "".join(f"{name}={value}\n" for name, value in extra_env.items())
    return MultiNodeLaunch(argv=argv, env=env, env_file=env_file, env_file_text=env_file_text,
                           hosts=hosts, world_size=world_size)


class HostfileRunner:
    """Runs each trial across the hostfile's nodes with DeepSpeed's launcher (`--hostfile`).

    Callable like `run_trial`. On a timeout the launcher gets SIGTERM first (its handler ends the
    remote ranks through pdsh), then its local process group is killed.
    """

    def __init__(self, hostfile: str | Path, *, master_addr: str, extra_env: dict[str, str] | None = None):
        self.hostfile, self.master_addr, self.extra_env = hostfile, master_addr, dict(extra_env or {})
        self.world_size = select_hosts(read_hostfile(hostfile))[1]

    def __call__(self, request: "TrialRequest") -> "TrialResult":
        import signal
        import subprocess
        import time

        from autoscale.engine.launch import free_port, kill_group, prepare_workdir
        from autoscale.engine.outcome import collected, last_line, reason_from_error_files, timed_out
        from autoscale.engine.request import TrialResult

        request_path, result_path = prepare_workdir(request)
        launch = build_launch(hostfile=self.hostfile, request_path=request_path, result_path=result_path,
                              master_addr=self.master_addr, master_port=free_port(),
                              extra_env={**self.extra_env, "AUTOSCALE_LAUNCH_TIME": repr(time.time())})
        launch.env_file.write_text(launch.env_file_text)
        started = time.monotonic()
        with open(request.workdir / "launcher.log", "wb") as log:
            process = subprocess.Popen(launch.argv, env=launch.env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, process_group=0)
        try:
            process.wait(timeout=request.timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            kill_group(process.pid)
            process.wait()
            return timed_out(request, wall_s=time.monotonic() - started)
        finally:
            kill_group(process.pid)
        wall_s = time.monotonic() - started
        if process.returncode == 0 and result_path.exists():
            return collected(result_path, wall_s=wall_s)
        reason = reason_from_error_files(request.workdir) or (
            f"crash: DeepSpeed's launcher exited with code {process.returncode}: "
            f"{last_line(request.workdir / 'launcher.log')}")
        return TrialResult.failed(reason, wall_s=wall_s)
