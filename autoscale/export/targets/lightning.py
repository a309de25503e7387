"""`lightning`: `DeepSpeedStrategy` arguments and `Trainer` flags, as JSON and as a Python snippet.

The strategy gets autoscale's ds_config as `config=` (keeping bucket sizes and the torch optimizer
under offload, which its keyword arguments cannot say) minus the entries Lightning fills itself:
it refuses `gradient_accumulation_steps` in the config (it comes from `accumulate_grad_batches`),
adds the fp16/bf16 section from `precision`, and takes clipping from `gradient_clip_val`.
Across nodes the Trainer gets `num_nodes` and `devices` per node and is started by torchrun on each
node (Lightning reads torchrun's environment), the launch its docs give for a cluster without Slurm.
"""

from __future__ import annotations

import copy
import json
import pprint
from pathlib import Path

from autoscale.export.base import (ANY, ATTENTION_AT_LOAD, CHECKPOINTING_IN_MODEL, From, IN_DS_CONFIG, InUserCode,
                                   KERNEL_SET_IN_MODEL, MICRO_BATCH_IN_LOADER, Mapped, NOT_IN_DS_CONFIG, Refuse,
                                   SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED, Target, header)
from autoscale.export import launch
from autoscale.export.source import ExportSource

LIGHTNING_OWNED = ("train_batch_size", "gradient_accumulation_steps", "gradient_clipping", "bf16", "fp16")
DATA_PARALLEL_ONLY = Refuse("Lightning's DeepSpeedStrategy runs data parallel only")

SNIPPET = '''{header}
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DeepSpeedStrategy

STRATEGY = {strategy}
TRAINER = {trainer}

trainer = Trainer(strategy=DeepSpeedStrategy(**STRATEGY), **TRAINER)
# trainer.fit(model, train_dataloaders=...)
'''


class LightningTarget(Target):
    name = "lightning"
    table = {
        "zero_stage": IN_DS_CONFIG,
        "offload": IN_DS_CONFIG,
        "micro_batch": MICRO_BATCH_IN_LOADER,
        "grad_accum": Mapped({"trainer.accumulate_grad_batches": From.KNOB}),
        "precision": {"fp32": Mapped({"trainer.precision": "32-true"}),
                      "bf16": Mapped({"trainer.precision": "bf16-mixed"}),
                      "fp16": Mapped({"trainer.precision": "16-mixed"}),
                      "fp8": NOT_IN_DS_CONFIG},
        "checkpointing": CHECKPOINTING_IN_MODEL,
        "kernels": {"torch": Mapped(),
                    "compile": InUserCode("torch.compile the model in LightningModule.configure_model"),
                    ANY: KERNEL_SET_IN_MODEL},
        "attention": ATTENTION_AT_LOAD,
        "tp": {1: Mapped(), ANY: DATA_PARALLEL_ONLY},
        "pp": {1: Mapped(), ANY: DATA_PARALLEL_ONLY},
        **SEQUENCE_AND_SCHEDULE_ON_DEEPSPEED,
    }

    def documents(self, source: ExportSource, out_dir: Path) -> dict[str, dict]:
        config = {k: v for k, v in copy.deepcopy(source.ds_config).items() if k not in LIGHTNING_OWNED}
        cluster = source.cluster
        trainer = {"accelerator": "auto", "devices": cluster.gpus_per_node, "num_nodes": cluster.nodes,
                   "gradient_clip_val": source.ds_config.get("gradient_clipping", 0.0)}
        return {"strategy": {"config": config}, "trainer": trainer}

    def render(self, documents, source, out_dir):
        snippet = SNIPPET.format(header=header(source).rstrip("\n"),
                                 strategy=pprint.pformat(documents["strategy"], sort_dicts=False),
                                 trainer=pprint.pformat(documents["trainer"], sort_dicts=False))
        settings = {**documents, "provenance": source.provenance}
        files = {"lightning.json": json.dumps(settings, indent=2) + "\n", "lightning_trainer.py": snippet}
        return files, [*launch.torchrun(source.cluster), launch.TRAIN_SCRIPT]


TARGET = LightningTarget()
