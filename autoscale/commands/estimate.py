"""`autoscale estimate`: the cost model's prediction for one point; knobs left out are planned.

Every knob of `Point` is a flag here (`--zero-stage`, `--micro-batch`, ...), built from its fields.
A point given in full is predicted as it is, whether it fits or not and whichever engine would run
it: the answer says how far it is from the usable memory and which engines (`layout_targets`) run
it. Knobs left open are chosen by the model among the layouts that fit and `--target` runs.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict
from typing import Literal, Optional

import typer
from rich.table import Table

from autoscale.console import make_console
from autoscale.errors import UserError
from autoscale.point import KNOB_NAMES, KNOBS

GIB = 2**30


def estimate_point(*, model: str, hardware: str, gpus: int, seq_len: Optional[int], global_batch: Optional[int],
                   fixed: dict, target: Optional[str] = None) -> dict:
    """The prediction as one JSON-ready dict: the point (planned where `fixed` leaves knobs open),
    which knobs the model chose, memory and time breakdowns, which engines run the point, and
    DeepSpeed's estimator."""
    from autoscale.hardware import get_hardware
    from autoscale.layout import resolve_global_batch, resolve_seq_len
    from autoscale.layout_targets import TRIAL_ENGINE, get_layout_target
    from autoscale.models import resolve_model

    if gpus <= 0:
        raise UserError(f"--gpus must be positive, got {gpus}")
    spec, device = resolve_model(model), get_hardware(hardware)
    return estimate_spec(spec, device, gpus=gpus, seq_len=resolve_seq_len(spec, seq_len, on_gpu=device.name != "cpu"),
                         global_batch=resolve_global_batch(global_batch, world_size=gpus), fixed=fixed,
                         target=get_layout_target(target) if target else TRIAL_ENGINE)


def estimate_spec(spec, device, *, gpus: int, seq_len: int, global_batch: int, fixed: dict, target=None,
                  params=None) -> dict:
    """`estimate_point` for a built `ModelSpec` and `Hardware` (what published-run checks call). A point
    given in full is predicted under the arithmetic alone (`layout.check_layout`), whatever engine would
    run it; knobs left open are planned among the layouts `target` runs."""
    from autoscale.costmodel import deepspeed_model_states_bytes, plan_cluster, predict
    from autoscale.layout import build_point, describe_skipped
    from autoscale.layout_targets import who_runs

    skipped = ""
    if set(fixed) >= set(KNOB_NAMES):
        point = build_point(fixed, global_batch=global_batch, world_size=gpus, spec=spec, target=None)
        prediction = predict(spec, point, device, world_size=gpus, seq_len=seq_len, params=params)
    else:
        plan = plan_cluster(spec, device, gpus, global_batch=global_batch, seq_len=seq_len, fixed=fixed,
                            params=params, target=target)
        # the fastest that fits; when nothing does, the smallest predicted peak (said not to fit)
        point, prediction = (plan.fitting[0] if plan.fitting
                             else min(plan.ranked, key=lambda pair: pair[1].peak_bytes))
        skipped = describe_skipped(plan.skipped)
    try:
        deepspeed_bytes = deepspeed_model_states_bytes(spec, point, world_size=gpus,
                                                       gpus_per_node=device.gpus_per_node)
    except ImportError:
        deepspeed_bytes = None
    return {"prediction": True, "model": spec.name, "hardware": device.name, "gpus": gpus, "seq_len": seq_len,
            "global_batch": global_batch, "point": point.as_dict(),
            "chosen_by_model": [knob for knob in KNOB_NAMES if knob not in fixed],
            "planned_for": target.name if target is not None and set(fixed) < set(KNOB_NAMES) else None,
            "skipped_layouts": skipped, "run_by": who_runs(point), **prediction.as_dict(),
            "memory_verdict": prediction.memory_verdict(),
            "deepspeed_estimate": {"model_states_bytes": deepspeed_bytes}}


MEMORY_ROWS = {"params": "parameters", "grads": "gradients", "optimizer": "optimizer states",
               "model_states_bytes": "model states (sum)", "activations_bytes": "activations",
               "logits_bytes": "logits", "buffers_bytes": "communication buffers", "overhead_bytes": "overhead",
               "peak_bytes": "peak", "host_bytes": "on the host (offloaded)"}
TIME_ROWS = {"compute_s": "compute", "comm_s": "communication", "bubble_s": "pipeline bubble",
             "optimizer_s": "optimizer step", "offload_s": "offload transfers", "overhead_s": "overhead",
             "step_s": "step"}


def _print(result: dict) -> None:
    from autoscale.costmodel.params import calibration_in_use
    from autoscale.layout_targets import LAYOUT_TARGETS, describe_who_runs
    from autoscale.point import Point

    console = make_console()
    point = Point.from_dict(result["point"])
    chosen = ", ".join(result["chosen_by_model"]) or "none"
    console.print(f"[bold]{result['model']}[/] on {result['gpus']} x {result['hardware']}, seq {result['seq_len']}, "
                  f"global batch {result['global_batch']} (predicted, not measured)")
    console.print(f"point: {point.describe()} (chosen by the model: {chosen})", highlight=False)
    if result["planned_for"]:
        console.print(f"planned among the layouts {LAYOUT_TARGETS[result['planned_for']].engine} runs (--target)",
                      highlight=False)
    if result["skipped_layouts"]:
        console.print(f"layouts skipped by rule: {result['skipped_layouts']}", highlight=False)
    console.print(f"who runs it: {describe_who_runs(result['run_by'])}", highlight=False)
    memory, time = result["memory"], result["time"]
    table = Table(title="memory per rank")
    table.add_column("part")
    table.add_column("GiB", justify="right")
    for key, label in MEMORY_ROWS.items():
        table.add_row(label, f"{memory[key] / GIB:.2f}")
    theirs = result["deepspeed_estimate"]["model_states_bytes"]
    if theirs is not None:
        table.add_row("DeepSpeed's estimator (model states)", f"{theirs / GIB:.2f}")
    table.add_row("usable (the limit)", f"{result['usable_bytes'] / GIB:.2f}")
    table.add_row("device share", f"{result['device_bytes'] / GIB:.2f}")
    console.print(table)
    steps = Table(title="step time")
    steps.add_column("part")
    steps.add_column("s", justify="right")
    for key, label in TIME_ROWS.items():
        steps.add_row(label, f"{time[key]:.4g}")
    console.print(steps)
    console.print(f"tokens/s {result['tokens_per_s']:,.0f}   TFLOP/s per device {result['tflops_per_gpu']:.1f}   "
                  f"MFU {result['mfu']:.1%}", highlight=False)
    console.print(f"memory: {result['memory_verdict']}", highlight=False)
    console.print(calibration_in_use(result["hardware"]), highlight=False, markup=False)


def estimate(
    model: str = typer.Option(..., help="Model preset name or a Hugging Face config.json."),
    hardware: str = typer.Option(..., help="Hardware catalog name (a100-40gb ... cpu) or a YAML file."),
    gpus: int = typer.Option(1, help="Devices (ranks) in total."),
    global_batch: Optional[int] = typer.Option(None, help="Sequences per optimizer step. Default: 8 per rank."),
    seq_len: Optional[int] = typer.Option(None, help="Tokens per sequence. Default: the model's, at most 8192 on GPUs and 1024 on CPUs."),
    target: Optional[str] = typer.Option(None, help="Knobs left open are chosen among the layouts this engine "
                                         "runs (deepspeed, megatron-deepspeed, megatron, torchtitan, hf-trainer, "
                                         "...). Default: deepspeed, autoscale's trials."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    **knobs,
) -> None:
    """Predict memory per rank and step time for one point, and say which engines run it; knobs left
    out are chosen by the model."""
    fixed = {name: value for name, value in knobs.items() if value is not None}
    result = estimate_point(model=model, hardware=hardware, gpus=gpus, seq_len=seq_len,
                            global_batch=global_batch, fixed=fixed, target=target)
    if as_json:
        print(json.dumps(result))
    else:
        _print(result)


def _with_knob_flags(command):
    """`command` with one optional flag per knob of `Point` (`--zero-stage`, `--micro-batch`, ...)."""
    signature = inspect.signature(command)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    flags = []
    for knob in KNOBS:
        kind = Literal[tuple(map(str, knob.choices))] if knob.choices and knob.type is str else knob.type
        choices = f" One of: {', '.join(map(str, knob.choices))}." if knob.choices else ""
        declared = f"{knob.flag}/--no-{knob.flag[2:]}" if knob.type is bool else knob.flag
        choices = "" if knob.type is bool else choices
        flags.append(inspect.Parameter(knob.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                       default=typer.Option(None, declared, help=knob.help + choices)))
    command.__signature__ = signature.replace(parameters=[*fixed, *flags])
    command.__annotations__ = {**{p.name: p.annotation for p in fixed},
                               **{p.name: p.annotation for p in flags}, "return": None}
    return command


def register(app: typer.Typer) -> None:
    app.command("estimate")(_with_knob_flags(estimate))
