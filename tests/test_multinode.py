"""The multi-node launch command: built as an argument list, accepted by DeepSpeed's own parser,
and safe to hand to its pdsh backend, which turns it into a remote shell line."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from autoscale.engine.multinode import (RANK_MODULE, Host, build_launch, parse_hostfile, read_hostfile,
                                        select_hosts)
from autoscale.errors import UserError

TWO_NODES = """\
# two nodes, four GPUs each
worker-0 slots=4

worker-1   slots=4   # the second one
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def launch_for(tmp_path: Path, *, hostfile_text: str = TWO_NODES, folder: str = "trial 0", **overrides):
    hostfile = write(tmp_path / "hostfile", hostfile_text)
    workdir = tmp_path / folder
    kwargs = dict(hostfile=hostfile, request_path=workdir / "request.json", result_path=workdir / "result.json",
                  master_addr="worker-0", master_port=29511, extra_env={"AUTOSCALE_LAUNCH_TIME": "1700000000.5"},
                  base_env={"PATH": "/usr/bin"}, launcher="deepspeed")
    return build_launch(**{**kwargs, **overrides})


def test_argv_for_two_nodes_is_the_deepspeed_launcher_with_the_rank_module(tmp_path):
    launch = launch_for(tmp_path)
    workdir = tmp_path / "trial 0"
    assert launch.argv == ["deepspeed", "--hostfile", str(tmp_path / "hostfile"), "--num_nodes", "2",
                           "--num_gpus", "4", "--master_addr", "worker-0", "--master_port", "29511",
                           "--no_local_rank", "--module", RANK_MODULE,
                           str(workdir / "request.json"), str(workdir / "result.json")]
    assert launch.hosts == (Host("worker-0", 4), Host("worker-1", 4))
    assert launch.world_size == 8


def test_deepspeeds_own_parser_accepts_the_argv(tmp_path):
    from deepspeed.launcher.runner import parse_args

    launch = launch_for(tmp_path)
    args = parse_args(launch.argv[1:])
    assert (args.hostfile, args.num_nodes, args.num_gpus) == (str(tmp_path / "hostfile"), 2, 4)
    assert (args.master_addr, args.master_port) == ("worker-0", 29511)
    assert args.module and args.no_local_rank and not args.no_python
    assert args.user_script == RANK_MODULE
    assert args.user_args == launch.argv[-2:]


def test_deepspeeds_hostfile_reader_sees_the_same_hosts(tmp_path):
    from deepspeed.launcher.runner import fetch_hostfile

    launch = launch_for(tmp_path)
    assert dict(fetch_hostfile(str(tmp_path / "hostfile"))) == {h.name: h.slots for h in launch.hosts}


def test_paths_with_spaces_and_quotes_stay_single_argv_items(tmp_path):
    launch = launch_for(tmp_path, folder="my runs/it's trial 0")
    request, result = launch.argv[-2:]
    assert request == str(tmp_path / "my runs/it's trial 0" / "request.json")
    assert result.endswith("it's trial 0/result.json")
    assert all(isinstance(item, str) for item in launch.argv)


def test_pdsh_remote_shell_line_keeps_paths_and_env_whole(tmp_path, monkeypatch):
    """What pdsh runs on each node is one shell line; split it as a shell would and compare."""
    from deepspeed.launcher.multinode_runner import PDSHRunner
    from deepspeed.launcher.runner import parse_args

    monkeypatch.chdir(tmp_path)
    launch = launch_for(tmp_path, folder="my runs/it's trial 0",
                        extra_env={"AUTOSCALE_LAUNCH_TIME": "1700000000.5", "OMP_NUM_THREADS": "4"})
    runner = PDSHRunner(parse_args(launch.argv[1:]), "e30=")
    for line in launch.env_file_text.splitlines(keepends=True):  # as DeepSpeed's runner reads DS_ENV_FILE
        key, value = line.split("=", maxsplit=1)
        runner.add_export(key, value)
    cmd, _, _ = runner.get_cmd(dict(launch.env), {h.name: list(range(h.slots)) for h in launch.hosts})
    remote = shlex.split(" ".join(cmd[cmd.index("worker-0,worker-1") + 1:]))
    assert remote[-2:] == launch.argv[-2:]
    assert "AUTOSCALE_LAUNCH_TIME=1700000000.5;" in remote and "OMP_NUM_THREADS=4;" in remote


def test_extra_env_goes_to_the_local_env_and_the_file_deepspeed_exports(tmp_path):
    launch = launch_for(tmp_path, extra_env={"AUTOSCALE_LAUNCH_TIME": "1.5", "DS_ACCELERATOR": "cuda"})
    assert launch.env["AUTOSCALE_LAUNCH_TIME"] == "1.5" and launch.env["PATH"] == "/usr/bin"
    assert launch.env["DS_ENV_FILE"] == str(launch.env_file)
    assert launch.env_file == tmp_path / "trial 0" / "deepspeed_env"
    assert launch.env_file_text == "AUTOSCALE_LAUNCH_TIME=1.5\nDS_ACCELERATOR=cuda\n"


def test_hostfile_comments_and_blank_lines_are_skipped_and_world_size_sums_slots():
    hosts = parse_hostfile("# cluster\n\n  10.0.0.1 slots=8\nnode_b slots=2 # small\n")
    assert hosts == (Host("10.0.0.1", 8), Host("node_b", 2))
    assert select_hosts(hosts) == (hosts, 10)


def test_num_nodes_and_num_gpus_make_the_world_size():
    hosts = parse_hostfile("a slots=8\nb slots=8\nc slots=8\n")
    chosen, world_size = select_hosts(hosts, num_nodes=2, num_gpus=4)
    assert [h.name for h in chosen] == ["a", "b"] and world_size == 8


def test_unequal_slots_leave_num_gpus_to_each_host(tmp_path):
    launch = launch_for(tmp_path, hostfile_text="a slots=8\nb slots=4\n")
    assert "--num_gpus" not in launch.argv and launch.world_size == 12


@pytest.mark.parametrize("text, message", [
    ("worker-0\n", "line 1 ('worker-0'): expected 'HOST slots=N'"),
    ("a slots=2\nworker-1 slots=four\n", "line 2 ('worker-1 slots=four'): slots must be a positive integer"),
    ("worker-1 slots=0\n", "line 1 ('worker-1 slots=0'): slots must be a positive integer"),
    ("worker-1 slots=2 extra\n", "line 1 ('worker-1 slots=2 extra'): expected 'HOST slots=N'"),
    ("a slots=1\na slots=2\n", "line 2 ('a slots=2'): host 'a' is listed twice"),
    ("node;reboot slots=2\n", "line 1 ('node;reboot slots=2'): 'node;reboot' is not a host name"),
    ("$(touch${IFS}x) slots=2\n", "'$(touch${IFS}x)' is not a host name"),
    ("-oProxyCommand=sh slots=2\n", "'-oProxyCommand=sh' is not a host name"),
    ("a,b slots=2\n", "'a,b' is not a host name"),
    ("# only a comment\n\n", "lists no hosts"),
])
def test_bad_hostfile_lines_are_refused_naming_the_line(text, message):
    with pytest.raises(UserError) as caught:
        parse_hostfile(text)
    assert message in str(caught.value)


def test_missing_hostfile_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_hostfile(tmp_path / "nope")


@pytest.mark.parametrize("overrides, message", [
    (dict(master_addr="worker-0;reboot"), "--master_addr 'worker-0;reboot' is not a host name"),
    (dict(master_addr="$(hostname)"), "is not a host name"),
    (dict(master_port=0), "--master_port 0 is not a TCP port"),
    (dict(folder="runs/$HOME"), "trial request path"),
    (dict(folder='runs/"x"'), "trial request path"),
    (dict(folder="runs/`id`"), "trial request path"),
    (dict(extra_env={"X": "$(reboot)"}), "environment variable X="),
    (dict(extra_env={"BAD NAME": "1"}), "environment variable name 'BAD NAME'"),
    (dict(num_nodes=3), "--num_nodes 3: the hostfile lists 2 host(s)"),
    (dict(num_gpus=5), "--num_gpus 5: must be at least 1 and at most every host's slots (worker-0 has 4)"),
])
def test_values_a_remote_shell_would_interpret_are_refused(tmp_path, overrides, message):
    with pytest.raises(UserError) as caught:
        launch_for(tmp_path, **overrides)
    assert message in str(caught.value)


@pytest.mark.slow
def test_the_hostfile_runner_really_starts_deepspeeds_launcher(tmp_path, quick_measure):
    """This machine has no ssh server, and DeepSpeed's launcher checks every hostfile node over ssh
    (even a lone localhost) before it launches: the runner must report that refusal as the trial's
    failure, in one line, rather than hang or lose it."""
    from autoscale.engine import TrialRequest
    from autoscale.engine.multinode import HostfileRunner
    from autoscale.models import PRESETS
    from autoscale.point import Point

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    runner = HostfileRunner(hostfile, master_addr="127.0.0.1", extra_env={"DS_ACCELERATOR": "cpu"})
    assert runner.world_size == 2
    result = runner(TrialRequest(spec=PRESETS["gpt-tiny"], point=Point(zero_stage=2, micro_batch=2, grad_accum=2),
                                 seq_len=64, nproc=2, workdir=tmp_path / "trial", measure=quick_measure))
    assert result.status == "failed"
    assert result.reason.startswith("crash: DeepSpeed's launcher exited with code 1:")
    assert "not reachable via ssh" in result.reason
