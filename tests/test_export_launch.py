"""Exported launch files start a job of the plan's size: each launcher's own parser reads the
multi-node files, and launch.sh starts ranks on CPU with a stand-in training script."""

from __future__ import annotations

import json
import os
import shlex
import string
import subprocess
import sys
import textwrap
from unittest import mock

import pytest
import yaml

from autoscale.cli import main
from autoscale.export import TARGETS, export
from autoscale.export.launch import Cluster
from autoscale.errors import UserError
from autoscale.point import Point
from autoscale.workload import DEFAULT_CONFIG_FLAG
from test_export import _free_port, make_run

# a point every target takes (torchtitan refuses ZeRO-1 and fp16)
ZERO3_BF16 = Point(zero_stage=3, micro_batch=1, grad_accum=4, precision="bf16")
NODES, GPUS_PER_NODE = 64, 8  # a 512-GPU plan on H100 nodes
NODE_ENV = {"NODE_RANK": "3", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "RDZV_ID": "job-7",
            "TRAIN_SCRIPT": "/home/me/train.py"}


def multinode_export(tmp_path, target: str):
    run = make_run(tmp_path / "run", ZERO3_BF16, world_size=NODES * GPUS_PER_NODE, gpus_per_node=GPUS_PER_NODE,
                   backend="model", predicted=True)
    return export(run, target)


def expanded(command: list[str]) -> list[str]:
    """The command as the shell runs it on node 3 of the job (launch.sh's $VARIABLES filled in)."""
    return [string.Template(word).substitute(NODE_ENV) for word in command]


def test_a_world_that_does_not_fill_whole_nodes_is_refused():
    with pytest.raises(UserError, match="--gpus-per-node"):
        Cluster.for_world(12, 8)
    assert Cluster.for_world(4, 8) == Cluster(nodes=1, gpus_per_node=4)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_exported_files_name_each_other_by_relative_paths(tmp_path, target):
    _, folder = multinode_export(tmp_path, target)
    for path in folder.iterdir():
        assert str(tmp_path) not in path.read_text(), path.name


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_sbatch_asks_for_the_plans_nodes_and_runs_launch_sh_on_each(tmp_path, target):
    _, folder = multinode_export(tmp_path, target)
    sbatch = (folder / "sbatch.sh").read_text()
    assert f"#SBATCH --nodes={NODES}" in sbatch and f"#SBATCH --gpus-per-node={GPUS_PER_NODE}" in sbatch
    assert f"srun --nodes={NODES} --ntasks-per-node=1 sh launch.sh" in sbatch
    assert subprocess.run(["bash", "-n", str(folder / "sbatch.sh")]).returncode == 0
    assert subprocess.run(["sh", "-n", str(folder / "launch.sh")]).returncode == 0


def test_launch_sh_of_a_multinode_job_needs_master_addr(tmp_path):
    _, folder = multinode_export(tmp_path, "hf-trainer")
    (tmp_path / "train.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "MASTER_ADDR"}
    done = subprocess.run(["sh", str(folder / "launch.sh")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "set MASTER_ADDR" in done.stderr


@pytest.mark.parametrize("target", ["hf-trainer", "lightning", "torchtitan"])
def test_torchrun_accepts_the_multinode_command(tmp_path, target):
    from torch.distributed.run import config_from_args, get_args_parser

    result, folder = multinode_export(tmp_path, target)
    words = expanded(result.command)
    assert words[0] == "torchrun"
    config, _, _ = config_from_args(get_args_parser().parse_args(words[1:]))
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (NODES, NODES, GPUS_PER_NODE)
    assert (config.rdzv_endpoint, config.run_id) == ("10.0.0.1:29500", "job-7")


def test_deepspeed_launcher_accepts_the_multinode_command_and_hostfile(tmp_path):
    from deepspeed.launcher.runner import apply_num_nodes_and_gpus, fetch_hostfile, parse_args

    result, folder = multinode_export(tmp_path, "deepspeed")
    words = expanded(result.command)
    args = parse_args(words[1:])
    assert args.no_ssh and (args.node_rank, args.master_addr) == (3, "10.0.0.1")
    assert args.user_script == NODE_ENV["TRAIN_SCRIPT"]
    assert args.user_args == [DEFAULT_CONFIG_FLAG, "ds_config.json"]
    resources = apply_num_nodes_and_gpus(fetch_hostfile(str(folder / args.hostfile)), args.num_nodes, args.num_gpus)
    assert sum(len(slots) for slots in resources.values()) == NODES * GPUS_PER_NODE


def accelerate_launch_args(folder, command: list[str]):
    """Run `accelerate launch`'s own parsing and checks on the command, in the export folder, up to
    the point where it would start processes; return its launcher arguments and environment."""
    import accelerate.commands.launch as accelerate_launch
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    seen = {}

    def capture(args):
        seen["cmd"], seen["env"] = prepare_deepspeed_cmd_env(args)
        seen["args"] = args

    args = accelerate_launch.launch_command_parser().parse_args(expanded(command)[2:])
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with mock.patch.object(accelerate_launch, "deepspeed_launcher", capture):
            accelerate_launch.launch_command(args)
    finally:
        os.chdir(cwd)
    return seen


@pytest.mark.export
def test_accelerate_launch_accepts_the_multinode_config_and_its_deepspeed_plugin_passes_its_checks(tmp_path):
    pytest.importorskip("accelerate")
    from accelerate.utils import DeepSpeedPlugin

    result, folder = multinode_export(tmp_path, "accelerate")
    seen = accelerate_launch_args(folder, result.command)
    args = seen["args"]
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == (str(NODES), str(GPUS_PER_NODE), 3)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.1", 29500)
    with mock.patch.dict(os.environ, seen["env"]):
        plugin = DeepSpeedPlugin(hf_ds_config=str(folder / "ds_config.json"))  # runs _deepspeed_config_checks
    assert plugin.zero_stage == 3


@pytest.mark.export
def test_accelerate_refuses_mixed_precision_beside_a_deepspeed_config_file(tmp_path):
    """What the export avoids: the check above is real, and fails on the old file."""
    pytest.importorskip("accelerate")
    from accelerate.utils import DeepSpeedPlugin

    result, folder = multinode_export(tmp_path, "accelerate")
    config = yaml.safe_load((folder / "accelerate_config.yaml").read_text()) | {"mixed_precision": "bf16"}
    (folder / "accelerate_config.yaml").write_text(yaml.safe_dump(config))
    seen = accelerate_launch_args(folder, result.command)
    with mock.patch.dict(os.environ, seen["env"]), pytest.raises(ValueError, match="deepspeed_config_file"):
        DeepSpeedPlugin(hf_ds_config=str(folder / "ds_config.json"))


@pytest.mark.export
def test_lightning_trainer_takes_the_multinode_arguments(tmp_path):
    pytest.importorskip("lightning")
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import DeepSpeedStrategy

    _, folder = multinode_export(tmp_path, "lightning")
    settings = json.loads((folder / "lightning.json").read_text())
    assert (settings["trainer"]["num_nodes"], settings["trainer"]["devices"]) == (NODES, GPUS_PER_NODE)
    strategy = DeepSpeedStrategy(**settings["strategy"])
    trainer = Trainer(strategy=strategy, **settings["trainer"] | {"accelerator": "cpu"},
                      logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert (trainer.num_nodes, trainer.num_devices, strategy.world_size) == (NODES, GPUS_PER_NODE, NODES * GPUS_PER_NODE)


@pytest.mark.export
def test_training_arguments_of_a_cpu_study_load_with_bf16_in_the_installed_transformers(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    point = Point(zero_stage=3, micro_batch=1, grad_accum=4, precision="bf16", checkpointing="full")
    run = make_run(tmp_path / "run", point, backend="cpu")
    _, folder = export(run, "hf-trainer")
    args = json.loads((folder / "training_args.json").read_text())
    monkeypatch.chdir(folder)
    loaded = transformers.TrainingArguments(**args)
    assert loaded.bf16 and loaded.use_cpu and loaded.activation_checkpointing


# --- launch.sh on CPU, with a stand-in for the training script -------------------------------------

STAND_IN = textwrap.dedent('''
    """Stands in for the user's train.py: the ranks meet (gloo) and say who they are and what they were given."""
    import json, os, sys
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    total = torch.ones(1)
    dist.all_reduce(total)
    with open(os.path.join(os.environ["STAND_IN_OUT"], f"rank-{dist.get_rank()}.json"), "w") as out:
        json.dump({"world_size": dist.get_world_size(), "met": int(total.item()), "cwd": os.getcwd(),
                   "argv": sys.argv[1:]}, out)
    dist.destroy_process_group()
''')


def run_launch_sh(tmp_path, folder, nodes: int, **env) -> list[dict]:
    """Start launch.sh once per node (all on this machine) and return what each rank wrote."""
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    (tmp_path / "ranks").mkdir()
    base = os.environ | {"TRAIN_SCRIPT": "stand_in.py", "STAND_IN_OUT": str(tmp_path / "ranks"),
                         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "DS_ACCELERATOR": "cpu",
                         "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], **env}
    nodes_started = [subprocess.Popen(["sh", str(folder / "launch.sh")], cwd=tmp_path, env=base | {"NODE_RANK": str(rank)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for rank in range(nodes)]
    for node in nodes_started:
        output, _ = node.communicate(timeout=300)
        assert node.returncode == 0, output[-3000:]
    return [json.loads(path.read_text()) for path in sorted((tmp_path / "ranks").iterdir())]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["deepspeed", "hf-trainer", "accelerate", "lightning"])
@pytest.mark.parametrize("gpus_per_node", [2, 1], ids=["one-node", "two-nodes"])
def test_launch_sh_starts_every_rank_of_the_job_on_cpu(tmp_path, target, gpus_per_node):
    if target == "accelerate":
        pytest.importorskip("accelerate")
    run = make_run(tmp_path / "run", ZERO3_BF16, world_size=2, gpus_per_node=gpus_per_node)
    _, folder = export(run, target)
    ranks = run_launch_sh(tmp_path, folder, nodes=2 // gpus_per_node)
    assert [(r["world_size"], r["met"]) for r in ranks] == [(2, 2), (2, 2)]
    assert {r["cwd"] for r in ranks} == {str(folder)}  # relative paths in the files resolve
    for argument in ranks[0]["argv"]:
        if argument.endswith((".json", ".yaml")):
            assert (folder / argument).is_file()


@pytest.mark.slow
def test_torchtitan_launch_sh_runs_the_torchtitan_module_without_a_train_py(tmp_path):
    """torchtitan is not installed here: a stand-in `torchtitan.train` module takes its place."""
    package = tmp_path / "stub" / "torchtitan"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(STAND_IN)
    run = make_run(tmp_path / "run", ZERO3_BF16, world_size=2, gpus_per_node=2)
    _, folder = export(run, "torchtitan")
    ranks = run_launch_sh(tmp_path, folder, nodes=1, TRAIN_SCRIPT="nowhere.py", PYTHONPATH=str(tmp_path / "stub"))
    assert [r["met"] for r in ranks] == [2, 2]
    assert ranks[0]["argv"] == ["--job.config_file", "torchtitan.toml"] and (folder / "torchtitan.toml").is_file()


def test_cli_export_splits_ranks_over_nodes_as_asked(tmp_path, capsys):
    run = make_run(tmp_path / "run", ZERO3_BF16, world_size=16)
    assert main(["export", str(run), "--to", "hf-trainer", "--gpus-per-node", "4"]) == 0
    line = capsys.readouterr().out.split("launch: ")[1].splitlines()[0]
    words = shlex.split(line)
    assert words[words.index("--nnodes") + 1] == "4" and words[words.index("--nproc_per_node") + 1] == "4"


# --- provenance ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_exported_file_that_holds_comments_says_the_plan_was_predicted_by_which_study_and_commit(tmp_path, target):
    _, folder = multinode_export(tmp_path, target)
    for path in folder.iterdir():
        if path.suffix == ".json" and path.name != "lightning.json":
            continue  # ds_config.json and training_args.json are read by libraries that refuse unknown keys
        if path.name.startswith("."):
            continue
        text = path.read_text()
        assert "PREDICTED by the cost model" in text and "'gpt-tiny-study'" in text and "0123abc" in text, path.name


def test_an_export_of_a_measured_study_says_measured(tmp_path):
    run = make_run(tmp_path / "run", ZERO3_BF16, backend="cuda")
    _, folder = export(run, "deepspeed")
    assert "# written by `autoscale export` from" in (folder / "launch.sh").read_text()
    assert "; measured, study 'gpt-tiny-study'" in (folder / "launch.sh").read_text()
