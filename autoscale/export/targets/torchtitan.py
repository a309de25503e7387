"""`torchtitan`: the job-config TOML a torchtitan user would write, with FSDP2 in place of ZeRO.

Keys are torchtitan's TOML `JobConfig` (torchtitan/config/job_config.py; the list checked is in
tests/test_export.py). Torchtitan's gradient accumulation is implied: global_batch_size /
(local_batch_size x data-parallel degree).

ZeRO maps onto FSDP2 (`torch.distributed.fsdp.fully_shard`) by what stays whole between forward
and backward:
- ZeRO-0 replicates everything and all-reduces gradients: DDP (replicate degree = dp);
- ZeRO-2 keeps whole parameters through forward and backward and shards gradients and optimizer
  state: FSDP with `reshard_after_forward` off ("never"), which all-gathers once per step and
  reduce-scatters gradients, as ZeRO-2 does (PyTorch's fully_shard docs liken it to ZeRO-2);
- ZeRO-3 shards parameters too and re-gathers them for backward: FSDP resharding after forward.
ZeRO-1 (optimizer state only) has no FSDP2 form and is refused, as is optimizer-only offload.
"""

from __future__ import annotations

import json
from pathlib import Path

from autoscale.export.base import ANY, From, InUserCode, Mapped, Refuse, Target, header
from autoscale.export import launch
from autoscale.export.source import ExportSource

SHARDED = {"toml.parallelism.data_parallel_replicate_degree": 1,
           "toml.parallelism.data_parallel_shard_degree": From.DATA_PARALLEL}


class TorchtitanTarget(Target):
    name = "torchtitan"
    table = {
        "zero_stage": {
            0: Mapped({"toml.parallelism.data_parallel_replicate_degree": From.DATA_PARALLEL,
                       "toml.parallelism.data_parallel_shard_degree": 1}),
            1: Refuse("FSDP2 cannot shard optimizer state alone; the nearest, ZeRO-2's mapping "
                      "(fsdp_reshard_after_forward = \"never\"), also shards gradients: tune with zero_stage 2"),
            2: Mapped({**SHARDED, "toml.parallelism.fsdp_reshard_after_forward": "never"},
                      note="FSDP2 without resharding after forward; unlike ZeRO-2 it also shards parameters "
                           "between steps"),
            3: Mapped({**SHARDED, "toml.parallelism.fsdp_reshard_after_forward": "always"}),
        },
        "micro_batch": Mapped({"toml.training.local_batch_size": From.KNOB}),
        "grad_accum": Mapped({"toml.training.global_batch_size": From.GLOBAL_BATCH}),
        "precision": {"fp32": Mapped({"toml.training.mixed_precision_param": "float32"}),
                      "bf16": Mapped({"toml.training.mixed_precision_param": "bfloat16"}),
                      "fp16": Refuse("training.mixed_precision_param takes bfloat16 or float32 only"),
                      "fp8": InUserCode("add torchtitan's float8 converter to the model (model.converters = "
                                        "[\"float8\"]): autoscale does not write its TOML section")},
        "checkpointing": {
            "none": Mapped({"toml.activation_checkpoint.mode": "none"}),
            "full": Mapped({"toml.activation_checkpoint.mode": "full"}),
            "selective": Mapped({"toml.activation_checkpoint.mode": "selective",
                                 "toml.activation_checkpoint.selective_ac_option": "op"},
                                note="torchtitan's per-op policy saves attention outputs and recomputes every "
                                     "other matmul; autoscale's recomputes the attention core: memory differs "
                                     "(tune with checkpointing op for torchtitan's own)"),
            "op": Mapped({"toml.activation_checkpoint.mode": "selective",
                          "toml.activation_checkpoint.selective_ac_option": "op"}),
        },
        "offload": {"none": Mapped(),
                    "cpu": Refuse("training.enable_cpu_offload moves parameters and gradients to CPU too "
                                  "(FSDP CPU offload), not optimizer state alone")},
        "kernels": {"torch": Mapped(), "compile": Mapped({"toml.training.compile": True}),
                    ANY: Refuse("torchtitan builds its own model; an autoscale kernel set cannot be chosen in its TOML")},
        "attention": {"model": Mapped(), ANY: Refuse("torchtitan builds its own model, whose attention core its "
                                                     "TOML does not choose by transformers' names")},
        "tp": Mapped({"toml.parallelism.tensor_parallel_degree": From.KNOB}),
        "pp": Mapped({"toml.parallelism.pipeline_parallel_degree": From.KNOB}),
        "cp": Mapped({"toml.parallelism.context_parallel_degree": From.KNOB}),
        "sp": {1: Mapped(), ANY: Refuse("torchtitan has no Ulysses sequence parallelism; its context "
                                        "parallelism (cp) splits sequences with ring attention instead")},
        "vpp": {1: Mapped(), ANY: InUserCode("choose an interleaved pipeline schedule "
                                             "(parallelism.pipeline_parallel_schedule = \"Interleaved1F1B\") with "
                                             "this many stages per pipeline rank")},
        "megatron_sp": {False: Mapped(), ANY: InUserCode("torchtitan's tensor parallelism already splits norms "
                                                         "along the sequence (its SequenceParallel plan) when tp > 1")},
    }

    def documents(self, source: ExportSource, out_dir: Path) -> dict[str, dict]:
        training = {"max_norm": source.ds_config.get("gradient_clipping", 0.0)}
        if source.seq_len:
            training["seq_len"] = source.seq_len
        return {"toml": {"job": {"description": f"autoscale export: {source.point.describe()}"},
                         "training": training, "parallelism": {}, "activation_checkpoint": {}}}

    def render(self, documents, source, out_dir):
        text = (header(source) + "# set [model] name/flavor and [training] dataset for your model\n"
                + to_toml(documents["toml"]))
        command = [*launch.torchrun(source.cluster), "-m", "torchtitan.train", "--job.config_file", "torchtitan.toml"]
        return {"torchtitan.toml": text}, command


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(sections: dict[str, dict]) -> str:
    """Tables of scalars, which is all a torchtitan job config needs; empty tables are left out."""
    blocks = []
    for name, values in sections.items():
        if values:
            blocks.append(f"[{name}]\n" + "".join(f"{key} = {_toml_value(v)}\n" for key, v in values.items()))
    return "\n".join(blocks)


TARGET = TorchtitanTarget()
