"""`deepspeed`: the ds_config autoscale checked, as is, and the `deepspeed` launcher command.

The script gets the config path the way `tune --script` hands it to a measured script
(`workload.DEFAULT_CONFIG_FLAG`, `--deepspeed_config`, which `deepspeed.add_config_arguments` defines
and `deepspeed.initialize(args=...)` reads), so a script tuned by autoscale runs unchanged. Across
nodes the launcher reads a hostfile and starts each node's ranks there (`export.launch.deepspeed`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from autoscale.ds_config import check_with_deepspeed
from autoscale.export.base import (ANY, ATTENTION_AT_LOAD, CHECKPOINTING_IN_MODEL, IN_DS_CONFIG, InUserCode,
                                   KERNEL_SET_IN_MODEL, MICRO_BATCH_IN_LOADER, Mapped, Refuse,
                                   SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED, ULYSSES_IN_USER_CODE, Target, header)
from autoscale.export import launch
from autoscale.export.source import ExportSource
from autoscale.workload import DEFAULT_CONFIG_FLAG


class DeepSpeedTarget(Target):
    name = "deepspeed"
    table = {
        "zero_stage": IN_DS_CONFIG,
        "micro_batch": MICRO_BATCH_IN_LOADER,
        "grad_accum": IN_DS_CONFIG,
        "precision": IN_DS_CONFIG,
        "offload": IN_DS_CONFIG,
        "checkpointing": CHECKPOINTING_IN_MODEL,
        "kernels": {"torch": Mapped(),
                    "compile": InUserCode("call engine.compile() on the engine deepspeed.initialize returns"),
                    ANY: KERNEL_SET_IN_MODEL},
        "attention": ATTENTION_AT_LOAD,
        "tp": {1: Mapped(), ANY: Refuse("autoscale's ds_config has no tensor-parallel section to carry it")},
        "pp": {1: Mapped(), ANY: InUserCode("the ds_config sets pipeline.stages; the model must be a "
                                            "deepspeed.pipe.PipelineModule with that many stages, trained "
                                            "with engine.train_batch (autoscale.models.pipeline builds ours)")},
        **SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED,
        "sp": {1: Mapped(), ANY: ULYSSES_IN_USER_CODE},
    }

    def documents(self, source: ExportSource, out_dir: Path) -> dict[str, dict]:
        return {"ds_config": copy.deepcopy(source.ds_config)}

    def render(self, documents, source, out_dir):
        check_with_deepspeed(documents["ds_config"])
        cluster = source.cluster
        command = [*launch.deepspeed(cluster), launch.TRAIN_SCRIPT, DEFAULT_CONFIG_FLAG, "ds_config.json"]
        files = {"ds_config.json": json.dumps(documents["ds_config"], indent=2) + "\n"}
        if cluster.nodes > 1:
            files[launch.HOSTFILE] = launch.hostfile(cluster, header(source))
        return files, command


TARGET = DeepSpeedTarget()
