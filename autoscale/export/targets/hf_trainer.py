"""`hf-trainer`: Hugging Face `TrainingArguments` as JSON, a ds_config with the Trainer's "auto"
values, and a `torchrun` command.

The Trainer fills "auto" ds_config entries from its own arguments (transformers'
`HfTrainerDeepSpeedConfig.trainer_config_process`), so the values it owns are written once, in
the arguments, and cannot disagree with the ds_config. The command passes the JSON file as the
script's only argument, which `HfArgumentParser.parse_json_file` reads (the convention of the
transformers example scripts).

The arguments are named as the installed transformers names them: `activation_checkpointing`
(5.x; `gradient_checkpointing` is its deprecated alias) where TrainingArguments has it, else the
old name; `use_cpu` for a study measured on CPU, where TrainingArguments otherwise refuses bf16.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from autoscale.export.base import (ANY, ATTENTION_AT_LOAD, IN_DS_CONFIG, KERNEL_SET_IN_MODEL, NOT_IN_DS_CONFIG,
                                   SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED, From, Mapped, Refuse, Target)
from autoscale.export import launch
from autoscale.export.source import ExportSource

# ds_config entries the Trainer owns: (section or None, key)
TRAINER_OWNED = ((None, "train_batch_size"), (None, "train_micro_batch_size_per_gpu"),
                 (None, "gradient_accumulation_steps"), (None, "gradient_clipping"),
                 ("bf16", "enabled"), ("fp16", "enabled"))

DATA_PARALLEL_ONLY = Refuse("the HF Trainer with DeepSpeed runs data parallel only")


class HfTrainerTarget(Target):
    name = "hf-trainer"
    table = {
        "zero_stage": IN_DS_CONFIG,
        "offload": IN_DS_CONFIG,
        "micro_batch": Mapped({"args.per_device_train_batch_size": From.KNOB}),
        "grad_accum": Mapped({"args.gradient_accumulation_steps": From.KNOB}),
        "precision": {"fp32": Mapped({"args.bf16": False, "args.fp16": False}),
                      "bf16": Mapped({"args.bf16": True, "args.fp16": False}),
                      "fp16": Mapped({"args.bf16": False, "args.fp16": True}),
                      "fp8": NOT_IN_DS_CONFIG},
        "checkpointing": {
            "none": Mapped({"args.activation_checkpointing": False}),
            "full": Mapped({"args.activation_checkpointing": True}),
            "selective": Refuse("TrainingArguments.activation_checkpointing recomputes whole layers; the "
                                "Trainer has no attention-only (selective) recomputation"),
            "op": Refuse("TrainingArguments.gradient_checkpointing recomputes whole layers; the Trainer has no "
                         "per-operator checkpointing policy"),
        },
        "kernels": {
            "torch": Mapped(),
            "compile": Mapped({"args.torch_compile": True}),
            "triton": Mapped({"args.use_liger_kernel": True},
                             note="Liger's Triton kernels (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy) "
                                  "stand in for autoscale's; pip install liger-kernel"),
            ANY: KERNEL_SET_IN_MODEL,
        },
        "attention": ATTENTION_AT_LOAD,
        "tp": {1: Mapped(), ANY: DATA_PARALLEL_ONLY},
        "pp": {1: Mapped(), ANY: DATA_PARALLEL_ONLY},
        **SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED,
    }

    def documents(self, source: ExportSource, out_dir: Path) -> dict[str, dict]:
        ds_config = copy.deepcopy(source.ds_config)
        for section, key in TRAINER_OWNED:
            (ds_config.setdefault(section, {}) if section else ds_config)[key] = "auto"
        args = {"output_dir": "output", "deepspeed": "ds_config.json",
                "max_grad_norm": source.ds_config.get("gradient_clipping", 0.0)}
        if source.on_cpu:
            args["use_cpu"] = True
        return {"args": args, "ds_config": ds_config}

    def render(self, documents, source, out_dir):
        args = dict(documents["args"])
        args[checkpointing_argument()] = args.pop("activation_checkpointing")
        files = {"training_args.json": json.dumps(args, indent=2) + "\n",
                 "ds_config.json": json.dumps(documents["ds_config"], indent=2) + "\n"}
        command = [*launch.torchrun(source.cluster), launch.TRAIN_SCRIPT, "training_args.json"]
        return files, command


def checkpointing_argument() -> str:
    """TrainingArguments' name for activation checkpointing in the installed transformers."""
    try:
        from transformers import TrainingArguments
    except ImportError:
        return "activation_checkpointing"  # the newest name, for whoever installs transformers later
    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


TARGET = HfTrainerTarget()
