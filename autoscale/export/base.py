"""The shape every export target shares: one mapping table, a starting document set, a renderer.

A target's table maps each knob of `Point` to what the target does with it:
- `Mapped(settings)`: write these values at dotted paths into the target's documents
  (`"args.bf16"` is key `bf16` of document `args`); a value may be a `From` placeholder;
- `InUserCode(instruction)`: the target has no setting because the knob lives in the training
  script the user writes (the model build, the DataLoader); the instruction is printed and written;
- `Refuse(reason)`: the target cannot express the value; export stops with a UserError naming the knob.

A row is one outcome for every value, or a dict from value to outcome with `ANY` as the fallback.
Every table covers every knob (a contract test checks it), so no setting is dropped in silence.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Union

from autoscale.errors import UserError
from autoscale.export import launch
from autoscale.export.source import ExportSource
from autoscale.point import Point


class From(enum.Enum):
    """Placeholders a `Mapped` value can hold, filled from the point being exported."""

    KNOB = "the knob's own value"
    DATA_PARALLEL = "data-parallel size (world size / (tp x pp))"
    GLOBAL_BATCH = "micro-batch x accumulation x data-parallel size"


ANY = object()  # the fallback key of a per-value row


@dataclass(frozen=True)
class Mapped:
    settings: dict = field(default_factory=dict)
    note: str = ""  # printed when the mapping is close but not identical


@dataclass(frozen=True)
class InUserCode:
    instruction: str


@dataclass(frozen=True)
class Refuse:
    reason: str


Outcome = Union[Mapped, InUserCode, Refuse]
Table = dict  # knob -> Outcome | dict[value or ANY, Outcome]

# for targets that embed autoscale's ds_config: the knob is already in it, written by to_ds_config
IN_DS_CONFIG = Mapped()

# for targets built on autoscale's ds_config: what it cannot carry (`ds_config.unexpressed`) is refused
NOT_IN_DS_CONFIG = Refuse("autoscale's ds_config cannot carry it, so this target would train something else")
# the ds_config carries sequence_parallel_size, but Ulysses is mostly the training script's: its groups,
# its attention and its sequence slices (engine.sequence_trial, models.sequence_parallel)
ULYSSES_IN_USER_CODE = InUserCode(
    "the ds_config sets sequence_parallel_size; the script calls deepspeed.runtime.sequence_parallel."
    "parallel_state_sp.initialize_sequence_parallel(sp) and passes that module as mpu= to deepspeed.initialize, "
    "wraps the attention core in deepspeed.sequence.layer.DistributedAttention(core, group, scatter_idx=2, "
    "gather_idx=1), gives each of the sp ranks its slice of every sequence (positions offset to match), and "
    "backpropagates loss / sp at ZeRO 0-2 (they sum gradients over the sequence group; ZeRO-3 averages)")
ULYSSES_NOT_MAPPED = Refuse("Ulysses needs the script to build its sequence groups and pass them to "
                            "deepspeed.initialize as mpu=, which this target's DeepSpeed integration does not take")
SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED = {
    "sp": {1: Mapped(), ANY: ULYSSES_NOT_MAPPED},
    "cp": {1: Mapped(), ANY: NOT_IN_DS_CONFIG},
    "vpp": {1: Mapped(), ANY: NOT_IN_DS_CONFIG},
    "megatron_sp": {False: Mapped(), ANY: NOT_IN_DS_CONFIG},
}


@dataclass(frozen=True)
class Export:
    """What an export produces: file name -> text, and the launch command as an argument list."""

    target: str
    files: dict[str, str]
    command: list[str]
    notes: list[str]

    @property
    def command_line(self) -> str:
        """The command as launch.sh runs it on each node, its $VARIABLES expanded there."""
        return launch.shell_line(self.command)


class Target(ABC):
    """One export target. Subclasses set `name` and `table` and build and render documents."""

    name: ClassVar[str]
    table: ClassVar[Table]

    @abstractmethod
    def documents(self, source: ExportSource, out_dir: Path) -> dict[str, dict]:
        """The target's documents before the table is applied: what does not depend on a knob."""

    @abstractmethod
    def render(self, documents: dict[str, dict], source: ExportSource, out_dir: Path) -> tuple[dict[str, str], list[str]]:
        """File name -> text, and the launch command's arguments."""


def outcome_for(table: Table, knob: str, value) -> Outcome:
    row = table[knob]
    if isinstance(row, dict):
        return row[value] if value in row else row[ANY]
    return row


def _set_path(documents: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = documents
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def apply_table(target: Target, source: ExportSource, documents: dict[str, dict]) -> list[str]:
    """Write every knob's settings into `documents`; return the notes to show the user.

    Refusals are collected first so one run names every knob the target cannot take.
    """
    point = source.point
    filled = {From.DATA_PARALLEL: source.data_parallel, From.GLOBAL_BATCH: source.global_batch}
    outcomes = {f.name: outcome_for(target.table, f.name, getattr(point, f.name)) for f in fields(Point)}
    refused = [f"{knob}={getattr(point, knob)!r}: {outcome.reason}"
               for knob, outcome in outcomes.items() if isinstance(outcome, Refuse)]
    if refused:
        raise UserError(f"cannot export to {target.name}: " + "; ".join(refused))
    notes = []
    for knob, outcome in outcomes.items():
        value = getattr(point, knob)
        if isinstance(outcome, InUserCode):
            notes.append(f"{knob}={value}: {outcome.instruction}")
            continue
        for path, setting in outcome.settings.items():
            if isinstance(setting, From):
                setting = value if setting is From.KNOB else filled[setting]
            _set_path(documents, path, setting)
        if outcome.note:
            notes.append(f"{knob}={value}: {outcome.note}")
    return notes


def build_export(target: Target, source: ExportSource, out_dir: Path) -> Export:
    """The target's files for `source`, to be written into `out_dir`; they name each other by
    paths relative to it.

    Every target also gets `launch.sh` (the command for one node, headed by what the user still has
    to do in their own script) and `sbatch.sh` (Slurm: launch.sh on every node); see `export.launch`.
    The command names `$TRAIN_SCRIPT`, the user's training script (default train.py).
    """
    documents = target.documents(source, out_dir)
    notes = apply_table(target, source, documents)
    files, command = target.render(documents, source, out_dir)
    cluster, uses_train_script = source.cluster, launch.TRAIN_SCRIPT in command
    files["launch.sh"] = launch.launch_script(command, cluster, header(source, notes), uses_train_script=uses_train_script)
    files["sbatch.sh"] = launch.sbatch_script(cluster, header(source), job_name=f"autoscale-{target.name}",
                                              uses_train_script=uses_train_script)
    return Export(target=target.name, files=files, command=command, notes=notes)


def header(source: ExportSource, notes: list[str] = (), prefix: str = "# ") -> str:
    """Comment lines saying where a file came from (predicted or measured) and what the user still has to do."""
    lines = [f"written by `autoscale export` from {source.describe()}"]
    lines += [f"to do: {note}" for note in notes]
    return "".join(f"{prefix}{line}\n" for line in lines)


# rows shared by the targets where the model is the user's own code
CHECKPOINTING_IN_MODEL = {
    "none": Mapped(),
    "full": InUserCode("recompute every transformer block in backward: wrap each block's forward in "
                       "torch.utils.checkpoint.checkpoint(..., use_reentrant=False) "
                       "(Hugging Face models: model.gradient_checkpointing_enable())"),
    "selective": InUserCode("recompute only the attention core softmax(QK^T)V in backward with "
                            "torch.utils.checkpoint and keep the linear layers' outputs "
                            "(selective recomputation, Korthikanti et al. 2022, as autoscale's model does)"),
    "op": InUserCode("checkpoint each block with torch.utils.checkpoint and a selective-checkpoint policy "
                     "(torch.utils.checkpoint.create_selective_checkpoint_contexts) that saves the attention "
                     "output and every other matmul's output and recomputes the rest (torchtitan's \"op\" policy)"),
}
ATTENTION_AT_LOAD = {"model": Mapped(), ANY: InUserCode(
    "load the model with this attn_implementation (transformers' names: sdpa, eager, flash_attention_2 for "
    "flash); the tuned speed assumes it")}
KERNEL_SET_IN_MODEL = InUserCode("build the model with this autoscale kernel set (kernels.get_kernel_set) "
                                 "or the same fused kernels from your own library; the tuned speed assumes them")
MICRO_BATCH_IN_LOADER = InUserCode("give the training DataLoader this batch size per process")
