"""`autoscale estimate`: the cost model's prediction for one point; flags left out are planned."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from autoscale.errors import UserError

GIB = 2**30
SEQUENCES_PER_DEVICE = 8  # default global batch when neither --global-batch nor --micro-batch is given


def estimate_point(*, model: str, hardware: str, gpus: int, seq_len: Optional[int], global_batch: Optional[int],
                   fixed: dict) -> dict:
    """The prediction as one JSON-ready dict: the point (planned where `fixed` leaves knobs open),
    which knobs the model chose, memory and time breakdowns, and DeepSpeed's estimator."""
    from autoscale.costmodel import deepspeed_model_states_bytes, plan_cluster
    from autoscale.costmodel.planner import PLANNED_KNOBS
    from autoscale.hardware import get_hardware
    from autoscale.models import resolve_model

    if gpus <= 0:
        raise UserError(f"--gpus must be positive, got {gpus}")
    spec, device = resolve_model(model), get_hardware(hardware)
    seq_len = seq_len or spec.max_seq_len
    if global_batch is None:
        if "micro_batch" in fixed:
            dp = gpus // (fixed.get("tp", 1) * fixed.get("pp", 1)) or 1
            global_batch = fixed["micro_batch"] * dp
        else:
            global_batch = SEQUENCES_PER_DEVICE * gpus
    point, prediction = plan_cluster(spec, device, gpus, global_batch=global_batch, seq_len=seq_len, fixed=fixed)[0]
    try:
        deepspeed_bytes = deepspeed_model_states_bytes(spec, point, world_size=gpus,
                                                       gpus_per_node=device.gpus_per_node)
    except ImportError:
        deepspeed_bytes = None
    return {"prediction": True, "model": spec.name, "hardware": device.name, "gpus": gpus, "seq_len": seq_len,
            "global_batch": global_batch, "point": point.as_dict(),
            "chosen_by_model": [knob for knob in PLANNED_KNOBS if knob not in fixed],
            "memory": asdict(prediction.memory), "time": asdict(prediction.time),
            "memory_limit_bytes": prediction.memory_limit_bytes, "fits": prediction.fits,
            "borderline": prediction.borderline, "tokens_per_s": prediction.time.tokens_per_s,
            "tflops_per_gpu": prediction.time.tflops_per_gpu, "mfu": prediction.time.mfu,
            "deepspeed_estimate": {"model_states_bytes": deepspeed_bytes}}


def _print(result: dict) -> None:
    from autoscale.point import Point

    console = Console()
    point = Point.from_dict(result["point"])
    chosen = ", ".join(result["chosen_by_model"]) or "none"
    console.print(f"[bold]{result['model']}[/] on {result['gpus']} x {result['hardware']}, seq {result['seq_len']}, "
                  f"global batch {result['global_batch']} (predicted, not measured)")
    console.print(f"point: {point.describe()} (chosen by the model: {chosen})")
    memory, time = result["memory"], result["time"]
    table = Table(title="memory per rank (GiB)")
    table.add_column("part")
    table.add_column("GiB", justify="right")
    for key in ("params", "grads", "optimizer", "model_states_bytes", "activations_bytes", "logits_bytes",
                "buffers_bytes", "overhead_bytes", "peak_bytes", "host_bytes"):
        table.add_row(key, f"{memory[key] / GIB:.2f}")
    theirs = result["deepspeed_estimate"]["model_states_bytes"]
    if theirs is not None:
        table.add_row("DeepSpeed estimator (model states)", f"{theirs / GIB:.2f}")
    table.add_row("limit per rank", f"{result['memory_limit_bytes'] / GIB:.2f}")
    console.print(table)
    steps = Table(title="step time (s)")
    steps.add_column("part")
    steps.add_column("s", justify="right")
    for key in ("compute_s", "comm_s", "bubble_s", "optimizer_s", "offload_s", "overhead_s", "step_s"):
        steps.add_row(key, f"{time[key]:.4g}")
    console.print(steps)
    console.print(f"tokens/s {result['tokens_per_s']:,.0f}   TFLOP/s per device {result['tflops_per_gpu']:.1f}   "
                  f"MFU {result['mfu']:.1%}   fits: {result['fits']}"
                  + ("   (borderline: within the model's memory error of the margin, only a trial can tell)"
                     if result["borderline"] else ""))


def estimate(
    model: str = typer.Option(..., help="Model preset name or a Hugging Face config.json."),
    hardware: str = typer.Option(..., help="Hardware catalog name (a100-40gb ... cpu) or a YAML file."),
    gpus: int = typer.Option(1, help="Devices (ranks) in total."),
    zero: Optional[int] = typer.Option(None, help="ZeRO stage 0-3."),
    micro_batch: Optional[int] = typer.Option(None, help="Sequences per device per micro-step."),
    global_batch: Optional[int] = typer.Option(None, help="Sequences per optimizer step."),
    seq_len: Optional[int] = typer.Option(None, help="Tokens per sequence (default: the model's maximum)."),
    tp: Optional[int] = typer.Option(None, help="Tensor-parallel size."),
    pp: Optional[int] = typer.Option(None, help="Pipeline-parallel size."),
    precision: Optional[str] = typer.Option(None, help="fp32, bf16 or fp16."),
    checkpointing: Optional[str] = typer.Option(None, help="none, selective or full."),
    offload: Optional[str] = typer.Option(None, help="none or cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Predict memory per rank and step time for one point; flags left out are chosen by the model."""
    given = {"zero_stage": zero, "micro_batch": micro_batch, "precision": precision,
             "checkpointing": checkpointing, "offload": offload, "tp": tp, "pp": pp}
    fixed = {name: value for name, value in given.items() if value is not None}
    result = estimate_point(model=model, hardware=hardware, gpus=gpus, seq_len=seq_len,
                            global_batch=global_batch, fixed=fixed)
    if as_json:
        print(json.dumps(result))
    else:
        _print(result)


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)
