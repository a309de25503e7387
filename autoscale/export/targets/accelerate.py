"""`accelerate`: an Accelerate config YAML whose DeepSpeed plugin reads autoscale's ds_config file,
and the `accelerate launch` command.

The YAML names the ds_config file rather than copying ZeRO keys into `deepspeed_config`, because
Accelerate refuses both at once and the file keeps every tuned setting (bucket sizes, overlap,
the torch optimizer under offload). For the same reason the YAML has no `mixed_precision`: beside
`deepspeed_config_file`, `accelerate launch` hands it on as a config field the plugin refuses
(`DeepSpeedPlugin._deepspeed_config_checks`); precision is the ds_config's fp16/bf16 sections.
Across machines the plugin starts ranks with torchrun on each (`deepspeed_multinode_launcher:
standard`), so no machine needs ssh access to the others.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from autoscale.export.base import (ANY, ATTENTION_AT_LOAD, CHECKPOINTING_IN_MODEL, IN_DS_CONFIG,
                                   KERNEL_SET_IN_MODEL, MICRO_BATCH_IN_LOADER, Mapped, NOT_IN_DS_CONFIG, Refuse,
                                   SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED, Target, header)
from autoscale.export import launch
from autoscale.export.source import ExportSource

DATA_PARALLEL_ONLY = Refuse("Accelerate's DeepSpeed plugin runs data parallel only")


class AccelerateTarget(Target):
    name = "accelerate"
    table = {
        "zero_stage": {3: Mapped({"config.deepspeed_config.zero3_init_flag": True}),
                       ANY: Mapped({"config.deepspeed_config.zero3_init_flag": False})},
        "micro_batch": MICRO_BATCH_IN_LOADER,
        "grad_accum": IN_DS_CONFIG,
        "offload": IN_DS_CONFIG,
        "precision": {"fp8": NOT_IN_DS_CONFIG, ANY: IN_DS_CONFIG},
        "checkpointing": CHECKPOINTING_IN_MODEL,
        "kernels": {"torch": Mapped(),
                    "compile": Mapped({"config.dynamo_config.dynamo_backend": "INDUCTOR"}),
                    ANY: KERNEL_SET_IN_MODEL},
        "attention": ATTENTION_AT_LOAD,
        "tp": {1: Mapped(), ANY: DATA_PARALLEL_ONLY},
        "pp": {1: Mapped(), ANY: DATA_PARALLEL_ONLY},
        **SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED,
    }

    def documents(self, source: ExportSource, out_dir: Path) -> dict[str, dict]:
        cluster = source.cluster
        plugin = {"deepspeed_config_file": "ds_config.json"}
        if cluster.nodes > 1:
            plugin["deepspeed_multinode_launcher"] = "standard"
        config = {
            "compute_environment": "LOCAL_MACHINE",
            "distributed_type": "DEEPSPEED",
            "deepspeed_config": plugin,
            **launch.accelerate_machine(cluster),
            "main_training_function": "main",
            "use_cpu": False,
            "debug": False,
        }
        return {"config": config, "ds_config": copy.deepcopy(source.ds_config)}

    def render(self, documents, source, out_dir):
        files = {"accelerate_config.yaml": header(source) + yaml.safe_dump(documents["config"], sort_keys=False),
                 "ds_config.json": json.dumps(documents["ds_config"], indent=2) + "\n"}
        command = [*launch.accelerate("accelerate_config.yaml"), launch.TRAIN_SCRIPT]
        return files, command


TARGET = AccelerateTarget()
