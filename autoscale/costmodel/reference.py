"""DeepSpeed's own coarse estimators, called with our parameter counts, to show beside ours."""

from __future__ import annotations

import contextlib
import io

from autoscale.models.spec import ModelSpec
from autoscale.point import Point


def _import_estimators():
    """DeepSpeed's estimators, imported without letting its start-up log reach stdout (JSON output
    goes there); its logger is pointed back at the real stdout afterwards."""
    import logging
    import sys

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    for logger in [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)] + [logging.root]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is captured:
                handler.setStream(sys.stdout)
    return estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs


def deepspeed_model_states_bytes(spec: ModelSpec, point: Point, *, world_size: int,
                                 gpus_per_node: int | None = None) -> int:
    """Per-rank device bytes of model states by DeepSpeed's estimators.

    ZeRO 0-2: `estimate_zero2_model_states_mem_needs(total_params, num_gpus_per_node, num_nodes,
    cpu_offload, additional_buffer_factor)`; ZeRO 3: `estimate_zero3_model_states_mem_needs(
    total_params, largest_layer_params, ..., cpu_offload, cpu_offload_params, zero_init, ...)`.
    Both assume 16-bit training (DeepSpeed has no fp32 or ZeRO-0 estimator: ZeRO-0 is reported as
    the stage-2 formula on one rank, i.e. no sharding). With offload on a CPU backend the host part
    lives in the same memory, so it is added.
    """
    estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs = _import_estimators()
    total = spec.param_count() // (point.tp * point.pp)
    dp = max(1, point.data_parallel(world_size))
    per_node = min(dp, gpus_per_node or dp)
    nodes = max(1, dp // per_node)
    offload = point.offload != "none"
    with contextlib.redirect_stdout(io.StringIO()):
        if point.zero_stage == 3:
            largest = max(spec.layer_params(), spec.vocab_size * spec.hidden)
            _, device, _ = estimate_zero3_model_states_mem_needs(
                total, largest, num_gpus_per_node=per_node, num_nodes=nodes, cpu_offload=offload,
                cpu_offload_params=False, zero_init=False)
        elif point.zero_stage == 0:
            _, device = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=1, num_nodes=1,
                                                              cpu_offload=offload)
        else:
            _, device = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=per_node,
                                                              num_nodes=nodes, cpu_offload=offload)
    return int(device)
