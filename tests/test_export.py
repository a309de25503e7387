"""`autoscale export`: each target's mapping, its refusals, and each output checked by its own library.

Fixture run folders are written the way `autoscale tune` writes them (ds_config from
`to_ds_config`). Tests needing transformers / accelerate / lightning are marked `export`.
"""

from __future__ import annotations

import ast
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import tomllib

import pytest
import yaml

from autoscale.cli import main
from autoscale.ds_config import check_with_deepspeed, to_ds_config
from autoscale.errors import UserError
from autoscale.export import TARGETS, export, load_source
from autoscale.export.base import ANY, Refuse, outcome_for
from autoscale.point import KNOBS, Point
from autoscale.space import load_space
from autoscale.workload import DEFAULT_CONFIG_FLAG

WORLD_SIZE = 2
GLOBAL_BATCH = 8
SEQ_LEN = 128

# torchtitan's documented TOML keys that the export may write, per section, as defined by the
# JobConfig dataclasses in pytorch/torchtitan torchtitan/config/job_config.py at commit
# 6404b932421f5ce382e7dac5ad381b2c17b1373c (field names and Literal values checked by hand).
TORCHTITAN_KEYS = {
    "job": {"description"},
    "training": {"local_batch_size", "global_batch_size", "seq_len", "max_norm", "mixed_precision_param",
                 "compile", "enable_cpu_offload"},
    "parallelism": {"data_parallel_replicate_degree", "data_parallel_shard_degree", "fsdp_reshard_after_forward",
                    "tensor_parallel_degree", "pipeline_parallel_degree", "context_parallel_degree"},
    "activation_checkpoint": {"mode", "selective_ac_option"},
}
TORCHTITAN_LITERALS = {
    ("training", "mixed_precision_param"): {"bfloat16", "float32"},
    ("parallelism", "fsdp_reshard_after_forward"): {"default", "always", "never"},
    ("activation_checkpoint", "mode"): {"selective", "full", "none"},
}

GPT_TINY_POINTS = load_space("default").points(global_batch=GLOBAL_BATCH, world_size=WORLD_SIZE)


def make_run(folder, point: Point, *, world_size: int = WORLD_SIZE, seq_len: int = SEQ_LEN,
             gpus_per_node: int | None = None, backend: str = "cuda", predicted: bool = False):
    """A run folder as `autoscale tune` leaves it, reduced to what export reads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ds_config.json").write_text(json.dumps(to_ds_config(point, world_size=world_size)))
    hardware = {"name": "h100-sxm", "gpus_per_node": gpus_per_node} if gpus_per_node else {"name": "cpu"}
    summary = {"study_name": "gpt-tiny-study", "model": {"name": "gpt-tiny"}, "world_size": world_size,
               "seq_len": seq_len, "global_batch": point.global_batch(world_size), "backend": backend,
               "hardware": hardware, "predicted": predicted, "git_commit": "0123abc",
               "best": {"trial_number": 7, "point": point.as_dict(), "metrics": {}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def exported(tmp_path, point: Point, target: str, **run):
    result, folder = export(make_run(tmp_path / "run", point, **run), target)
    return result, folder


def refusal(tmp_path, point: Point, target: str) -> str:
    with pytest.raises(UserError) as raised:
        exported(tmp_path, point, target)
    return str(raised.value)


def exportable(target: str) -> list[Point]:
    """The gpt-tiny space's points the target does not refuse."""
    table = TARGETS[target].table
    return [point for point in GPT_TINY_POINTS
            if not any(isinstance(outcome_for(table, knob, value), Refuse) for knob, value in point.as_dict().items())]


BF16_ZERO2 = Point(zero_stage=2, micro_batch=2, grad_accum=2, precision="bf16", checkpointing="full")


# --- the contract every target's table meets ---------------------------------------------------

@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_table_has_a_row_for_every_knob_and_value(target):
    table = TARGETS[target].table
    assert set(table) == set(Point.__dataclass_fields__)
    for knob in KNOBS:
        for value in knob.choices or (1, 2):  # open-ended knobs: a default row or an ANY fallback answers
            row = table[knob.name]
            assert not isinstance(row, dict) or value in row or ANY in row, (knob.name, value)


# --- sources -----------------------------------------------------------------------------------

def test_bare_ds_config_recovers_point_and_world_size(tmp_path):
    point = Point(zero_stage=3, micro_batch=4, grad_accum=2, precision="fp16", offload="cpu")
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(to_ds_config(point, world_size=4)))
    source = load_source(path)
    assert source.point == point and source.world_size == 4 and source.seq_len is None


def test_ds_config_with_auto_values_is_refused_naming_the_key(tmp_path):
    config = to_ds_config(BF16_ZERO2, world_size=1) | {"train_micro_batch_size_per_gpu": "auto"}
    (tmp_path / "ds.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="train_micro_batch_size_per_gpu"):
        load_source(tmp_path / "ds.json")


def test_run_folder_whose_files_disagree_is_refused(tmp_path):
    folder = make_run(tmp_path / "run", BF16_ZERO2)
    (folder / "ds_config.json").write_text(json.dumps(to_ds_config(Point(zero_stage=3, micro_batch=2, grad_accum=2,
                                                                         precision="bf16"), world_size=2)))
    with pytest.raises(UserError, match="zero_stage"):
        load_source(folder)


def test_run_folder_without_a_best_point_is_refused(tmp_path):
    folder = make_run(tmp_path / "run", BF16_ZERO2)
    summary = json.loads((folder / "summary.json").read_text()) | {"best": None}
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="no best point"):
        load_source(folder)


# --- deepspeed ---------------------------------------------------------------------------------

@pytest.mark.parametrize("point", GPT_TINY_POINTS, ids=Point.describe)
def test_deepspeed_export_is_the_tuned_ds_config_and_passes_deepspeed(tmp_path, point):
    result, folder = exported(tmp_path, point, "deepspeed")
    written = json.loads((folder / "ds_config.json").read_text())
    assert written == to_ds_config(point, world_size=WORLD_SIZE)
    check_with_deepspeed(written)


def test_deepspeed_command_is_the_launcher_line_handing_the_config_as_tune_script_does(tmp_path):
    result, folder = exported(tmp_path, BF16_ZERO2, "deepspeed")
    expected = ["deepspeed", "--num_gpus", "2", "--master_port", "$MASTER_PORT", "$TRAIN_SCRIPT",
                DEFAULT_CONFIG_FLAG, "ds_config.json"]
    assert result.command == expected
    script = (folder / "launch.sh").read_text().splitlines()[-1]
    assert shlex.split(script.removeprefix("exec ")) == expected


def test_launch_sh_is_executable_and_says_what_to_set_when_the_training_script_is_missing(tmp_path):
    import os
    import subprocess

    _, folder = exported(tmp_path, BF16_ZERO2, "deepspeed")
    assert os.access(folder / "launch.sh", os.X_OK)
    done = subprocess.run([str(folder / "launch.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "TRAIN_SCRIPT=path/to/yours.py" in done.stderr


def test_a_second_export_into_the_same_folder_removes_the_first_targets_files_only(tmp_path):
    run = make_run(tmp_path / "run", BF16_ZERO2)
    first, folder = export(run, "hf-trainer", tmp_path / "out")
    (folder / "notes.txt").write_text("mine")
    second, _ = export(run, "deepspeed", folder)
    left = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert left == set(second.files) | {"notes.txt"}
    assert set(first.files) - set(second.files)  # there was something stale to remove


def test_deepspeed_export_tells_the_user_what_lives_in_their_script(tmp_path):
    result, _ = exported(tmp_path, BF16_ZERO2, "deepspeed")
    assert any(note.startswith("checkpointing=full") for note in result.notes)


# --- hf-trainer --------------------------------------------------------------------------------

def test_hf_trainer_args_carry_batch_accumulation_precision_and_checkpointing(tmp_path):
    _, folder = exported(tmp_path, BF16_ZERO2, "hf-trainer")
    args = json.loads((folder / "training_args.json").read_text())
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (2, 2)
    assert (args["bf16"], args["fp16"], args["activation_checkpointing"]) == (True, False, True)
    assert args["deepspeed"] == "ds_config.json" and (folder / args["deepspeed"]).is_file()


def test_hf_trainer_ds_config_leaves_trainer_owned_values_auto(tmp_path):
    _, folder = exported(tmp_path, BF16_ZERO2, "hf-trainer")
    config = json.loads((folder / "ds_config.json").read_text())
    owned = [config["train_batch_size"], config["train_micro_batch_size_per_gpu"],
             config["gradient_accumulation_steps"], config["gradient_clipping"],
             config["bf16"]["enabled"], config["fp16"]["enabled"]]
    assert owned == ["auto"] * 6
    assert config["zero_optimization"]["stage"] == 2


def test_hf_trainer_refuses_selective_checkpointing_naming_the_knob(tmp_path):
    message = refusal(tmp_path, Point(zero_stage=1, micro_batch=1, grad_accum=4, checkpointing="selective"),
                      "hf-trainer")
    assert "checkpointing='selective'" in message


# --- accelerate --------------------------------------------------------------------------------

def test_accelerate_yaml_names_the_ds_config_and_leaves_precision_to_it(tmp_path):
    point = Point(zero_stage=3, micro_batch=1, grad_accum=4, precision="fp16", offload="cpu")
    result, folder = exported(tmp_path, point, "accelerate")
    config = yaml.safe_load((folder / "accelerate_config.yaml").read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["num_processes"] == WORLD_SIZE
    assert "mixed_precision" not in config  # accelerate refuses it beside deepspeed_config_file
    assert config["deepspeed_config"] == {"deepspeed_config_file": "ds_config.json", "zero3_init_flag": True}
    assert json.loads((folder / "ds_config.json").read_text()) == to_ds_config(point, world_size=WORLD_SIZE)
    assert result.command[:4] == ["accelerate", "launch", "--config_file", "accelerate_config.yaml"]


# --- lightning ---------------------------------------------------------------------------------

def test_lightning_strategy_config_leaves_out_what_lightning_fills(tmp_path):
    _, folder = exported(tmp_path, BF16_ZERO2, "lightning")
    settings = json.loads((folder / "lightning.json").read_text())
    config = settings["strategy"]["config"]
    assert not {"gradient_accumulation_steps", "train_batch_size", "gradient_clipping", "bf16", "fp16"} & set(config)
    assert config["zero_optimization"]["stage"] == 2
    assert (settings["trainer"]["precision"], settings["trainer"]["accumulate_grad_batches"]) == ("bf16-mixed", 2)


def test_lightning_snippet_is_python_holding_the_json_settings(tmp_path):
    _, folder = exported(tmp_path, BF16_ZERO2, "lightning")
    tree = ast.parse((folder / "lightning_trainer.py").read_text())
    literals = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and node.targets[0].id in ("STRATEGY", "TRAINER")}
    settings = json.loads((folder / "lightning.json").read_text())
    assert literals == {"STRATEGY": settings["strategy"], "TRAINER": settings["trainer"]}


def test_lightning_refuses_pipeline_parallel_naming_the_knob(tmp_path):
    message = refusal(tmp_path, Point(zero_stage=1, micro_batch=1, grad_accum=4, pp=2), "lightning")
    assert "pp=2" in message


# --- torchtitan --------------------------------------------------------------------------------

@pytest.mark.parametrize("point", exportable("torchtitan"), ids=Point.describe)
def test_torchtitan_toml_parses_and_uses_only_documented_keys(tmp_path, point):
    _, folder = exported(tmp_path, point, "torchtitan")
    toml = tomllib.loads((folder / "torchtitan.toml").read_text())
    for section, values in toml.items():
        assert set(values) <= TORCHTITAN_KEYS[section], section
        for key, value in values.items():
            assert value in TORCHTITAN_LITERALS.get((section, key), {value}), (section, key, value)
    dp = point.data_parallel(WORLD_SIZE)
    assert toml["training"]["global_batch_size"] == GLOBAL_BATCH
    assert toml["training"]["global_batch_size"] // (toml["training"]["local_batch_size"] * dp) == point.grad_accum
    assert toml["training"]["seq_len"] == SEQ_LEN


@pytest.mark.parametrize("stage, replicate, shard, reshard", [(0, 2, 1, None), (2, 1, 2, "never"),
                                                               (3, 1, 2, "always")])
def test_torchtitan_maps_zero_stages_onto_ddp_and_fsdp(tmp_path, stage, replicate, shard, reshard):
    _, folder = exported(tmp_path, Point(zero_stage=stage, micro_batch=1, grad_accum=4), "torchtitan")
    parallelism = tomllib.loads((folder / "torchtitan.toml").read_text())["parallelism"]
    assert (parallelism["data_parallel_replicate_degree"], parallelism["data_parallel_shard_degree"]) == (replicate, shard)
    assert parallelism.get("fsdp_reshard_after_forward") == reshard


def test_torchtitan_refusal_names_every_untranslatable_knob(tmp_path):
    message = refusal(tmp_path, Point(zero_stage=1, micro_batch=1, grad_accum=4, precision="fp16", offload="cpu"),
                      "torchtitan")
    assert all(knob in message for knob in ("zero_stage=1", "precision='fp16'", "offload='cpu'"))


def test_torchtitan_carries_tensor_and_pipeline_degrees(tmp_path):
    point = Point(zero_stage=3, micro_batch=1, grad_accum=4, tp=2, pp=2)
    _, folder = exported(tmp_path, point, "torchtitan", world_size=8)
    parallelism = tomllib.loads((folder / "torchtitan.toml").read_text())["parallelism"]
    assert (parallelism["tensor_parallel_degree"], parallelism["pipeline_parallel_degree"]) == (2, 2)
    assert parallelism["data_parallel_shard_degree"] == 2


# --- the command -------------------------------------------------------------------------------

def test_cli_bad_target_is_one_line_and_exit_2(tmp_path, capsys):
    folder = make_run(tmp_path / "run", BF16_ZERO2)
    assert main(["export", str(folder), "--to", "megatron"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown export target 'megatron'" in err


def test_cli_writes_beside_the_run_and_prints_files_and_command(tmp_path, capsys):
    folder = make_run(tmp_path / "run", BF16_ZERO2)
    assert main(["export", str(folder), "--to", "hf-trainer"]) == 0
    out = capsys.readouterr().out
    assert (folder / "export" / "hf-trainer" / "training_args.json").exists()
    assert f"wrote {folder.resolve() / 'export' / 'hf-trainer' / 'ds_config.json'}" in out
    assert "launch: torchrun --nnodes 1 --nproc_per_node 2 " in out


def test_cli_from_a_ds_config_file_writes_under_the_working_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "ds_config.json").write_text(json.dumps(to_ds_config(BF16_ZERO2, world_size=2)))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "ds_config.json", "--to", "deepspeed", "--out", "here"]) == 0
    assert (tmp_path / "here" / "ds_config.json").exists()
    assert main(["export", "ds_config.json", "--to", "torchtitan"]) == 0
    assert (tmp_path / "export" / "torchtitan" / "torchtitan.toml").exists()


# --- the target libraries' own parsers (pip install -e .[export]) ----------------------------

@pytest.mark.export
@pytest.mark.parametrize("point", exportable("hf-trainer"), ids=Point.describe)
def test_training_arguments_accept_the_hf_export(tmp_path, monkeypatch, point):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    _, folder = exported(tmp_path, point, "hf-trainer", backend="cpu")  # a CPU study: the export says use_cpu
    args = json.loads((folder / "training_args.json").read_text())
    monkeypatch.chdir(folder)  # launch.sh runs from the export folder; its paths are relative to it
    training_args = transformers.TrainingArguments(**args)
    assert training_args.use_cpu
    filled = training_args.hf_deepspeed_config.config
    assert filled["train_batch_size"] == point.micro_batch * point.grad_accum  # one rank outside a launcher
    assert filled["bf16"]["enabled"] == (point.precision == "bf16")
    assert filled["zero_optimization"]["stage"] == point.zero_stage


@pytest.mark.export
@pytest.mark.parametrize("point", exportable("accelerate"), ids=Point.describe)
def test_accelerate_loads_the_config_and_its_deepspeed_plugin(tmp_path, point):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    _, folder = exported(tmp_path, point, "accelerate")
    config = load_config_from_file(str(folder / "accelerate_config.yaml"))
    assert (config.distributed_type.value, config.num_processes) == ("DEEPSPEED", WORLD_SIZE)
    plugin = DeepSpeedPlugin(hf_ds_config=str(folder / config.deepspeed_config["deepspeed_config_file"]))
    assert (plugin.zero_stage, plugin.gradient_accumulation_steps) == (point.zero_stage, point.grad_accum)


@pytest.mark.export
@pytest.mark.parametrize("point", exportable("lightning"), ids=Point.describe)
def test_lightning_builds_the_strategy_and_trainer(tmp_path, point):
    pytest.importorskip("lightning")
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import DeepSpeedStrategy

    _, folder = exported(tmp_path, point, "lightning")
    settings = json.loads((folder / "lightning.json").read_text())
    strategy = DeepSpeedStrategy(**settings["strategy"])
    # one CPU device here; the exported device count is for the tuned machine
    trainer = Trainer(strategy=strategy, **settings["trainer"] | {"accelerator": "cpu", "devices": 1},
                      logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert trainer.accumulate_grad_batches == point.grad_accum
    assert strategy.config["zero_optimization"]["stage"] == point.zero_stage


ONE_STEP = textwrap.dedent('''
    import json, os, sys
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    args = json.load(open(sys.argv[1]))
    args.update(max_steps=1, report_to="none", save_strategy="no", use_cpu=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=128, n_positions=32))
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 128, (16, 32))]
    trainer = Trainer(model=model, args=TrainingArguments(**args), train_dataset=rows)
    result = trainer.train()
    ds = trainer.accelerator.state.deepspeed_plugin.deepspeed_config
    print(json.dumps({"loss": result.training_loss, "steps": result.global_step,
                      "micro": ds["train_micro_batch_size_per_gpu"], "accum": ds["gradient_accumulation_steps"],
                      "bf16": ds["bf16"]["enabled"], "stage": ds["zero_optimization"]["stage"]}), flush=True)
    # skip interpreter teardown, as autoscale/engine/rank.py does: gloo's threads can abort() in C++
    # destructors once the work is done ("terminate called without an active exception": CI, once)
    os._exit(0)
''')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.export
def test_hf_trainer_export_trains_one_step_on_cpu(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    _, folder = exported(tmp_path, BF16_ZERO2, "hf-trainer", world_size=1, seq_len=32)
    env = os.environ | {"DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    done = subprocess.run([sys.executable, "-c", ONE_STEP, "training_args.json"], env=env, cwd=folder,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 1 and math.isfinite(result["loss"]) and result["loss"] > 0
    assert (result["micro"], result["accum"], result["bf16"], result["stage"]) == (2, 2, True, 2)


# --- Ulysses sequence parallelism ----------------------------------------------------------------

def test_deepspeed_export_of_a_sequence_parallel_point_carries_sp_and_says_what_the_script_does(tmp_path):
    point = Point(zero_stage=1, micro_batch=2, grad_accum=2, sp=2)
    result, folder = exported(tmp_path, point, "deepspeed")
    assert json.loads((folder / "ds_config.json").read_text())["sequence_parallel_size"] == 2
    assert any(note.startswith("sp=2") and "DistributedAttention" in note for note in result.notes)


@pytest.mark.parametrize("target", ["hf-trainer", "accelerate", "lightning", "torchtitan"])
def test_targets_without_a_ulysses_mpu_refuse_sp_naming_the_knob(tmp_path, target):
    assert "sp=2" in refusal(tmp_path, Point(zero_stage=1, micro_batch=2, grad_accum=2, sp=2), target)
