"""Step time of one optimizer step: compute, exposed communication, pipeline bubble, optimizer.

compute, in two parts with their own efficiencies (`EfficiencyParams`):
  matmuls: 6 FLOPs per weight and token (Kaplan et al. 2020; Narayanan et al. 2021 Appendix), +2
  with full recompute (eq. (3)'s 4/3 on the blocks), over the 16-bit peak x a GEMM efficiency that
  saturates in the matrix width on one rank and in the micro-batch's tokens; fp8 runs the blocks'
  linears `fp8_matmul_speedup` times faster (Micikevicius et al. 2022).
  attention core: 4·s·h FLOPs per token and layer forward (scores and their product with V),
  halved for causal flash attention, which skips masked blocks (Dao 2023, Sec. 3.1), tripled for
  forward + backward, plus a forward with selective (Korthikanti et al. 2022 Sec. 5) or full
  recompute, over the 16-bit peak x `attention_efficiency`.
overhead: a fixed cost per optimizer step, and per micro-batch the host time of ZeRO-2/3's
hooks (one per parameter tensor, and ZeRO-3's gather/release per module), which grows with the
number of tensors rather than their size.
communication, per step (DeepSpeed 0.19 with the engine's ds_config):
  ZeRO-0/1: one all-reduce of the gradients at the accumulation boundary, after backward;
  ZeRO-2: a reduce-scatter per micro-batch (overlap_comm: partly hidden behind backward) and an
          all-gather of the updated parameters after the step;
  ZeRO-3: per micro-batch a reduce-scatter and two parameter all-gathers (forward and backward,
          Rajbhandari et al. 2020 Sec. 7.2.1: 3Ψ traffic vs 2Ψ).
  Tensor parallel: 2 all-reduces of the activations in forward and 2 in backward per layer
  (Narayanan et al. 2021 Sec. 2.3; Shoeybi et al. 2019 Fig. 4), 2 more with full recompute.
  With Megatron sequence parallelism each all-reduce becomes a reduce-scatter and an all-gather
  (Korthikanti et al. 2022 Sec. 4.2.2): the same bytes.
  Pipeline: one activation send and one gradient send per micro-batch, stage boundary and virtual
  stage (Narayanan et al. 2021 Sec. 2.2.2: interleaving multiplies the sends by v). Each
  tensor-parallel rank is charged the whole activation, its 1/t share only under Megatron
  sequence parallelism, where the activation is already split. Sec. 4.1's scatter/gather would
  send 1/t always; charging the whole activation fits BLOOM's DeepSpeed pipeline runs better
  (benchmarks/validate_gpu.py: within-sweep Spearman 0.77 against 0.45), so it stands in for
  per-micro-batch pipeline costs the model does not itemise.
  Context parallelism: K and V all-gathered over the cp ranks per layer in forward, again in
  backward with a reduce-scatter of their gradients (the all-gather variant, Llama Team 2024
  Sec. 3.3.2), overlapped with compute like ZeRO's collectives.
  Ulysses: four all-to-alls per layer in forward (q, k, v and the output), four in backward
  (Jacobs et al. 2023, Sec. 3.1).
bubble: (p-1)/(v·m) of the ideal pipelined time (Narayanan et al. 2021 Sec. 2.2, eq. (1) and the
interleaved schedule's v chunks per device), so with few micro-batches per step the bubble rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscale.costmodel.comm import Link, all_gather_s, all_reduce_s, all_to_all_s, reduce_scatter_s, send_s
from autoscale.costmodel.memory import element_bytes, local_tokens, params_per_rank, zero_shards
from autoscale.costmodel.params import EfficiencyParams
from autoscale.hardware import Hardware
from autoscale.models.spec import ModelSpec
from autoscale.point import Point


@dataclass(frozen=True, kw_only=True)
class TimeBreakdown:
    """Seconds of one optimizer step on one rank, and the throughput that implies.

    step_s = compute_s + comm_s + bubble_s + optimizer_s + offload_s + overhead_s; comm_s is the
    communication left exposed after overlap. tflops_per_gpu and mfu count model FLOPs (no
    recompute), per device as the engine does (on a CPU all ranks share one device).
    """

    compute_s: float
    comm_s: float
    bubble_s: float
    optimizer_s: float
    offload_s: float
    overhead_s: float
    step_s: float
    tokens_per_s: float
    tflops_per_gpu: float
    mfu: float
    gemm_efficiency: float


@dataclass(frozen=True, kw_only=True)
class Placement:
    """How ranks sit on nodes: ranks per node, and whether the device is shared by all ranks."""

    ranks_per_node: int
    shared_device: bool  # CPU: every rank runs on the same cores and memory


def gemm_efficiency(spec: ModelSpec, point: Point, *, seq_len: int, params: EfficiencyParams) -> float:
    width = math.sqrt(spec.hidden * spec.hidden / point.tp)
    tokens = local_tokens(point, seq_len)
    efficiency = (params.gemm_efficiency_max * width / (width + params.gemm_half_width)
                  * tokens / (tokens + params.gemm_half_tokens))
    if point.precision != "fp32":
        efficiency *= params.half_precision_speed
    return min(efficiency, 1.0)


def attention_flops_per_token(spec: ModelSpec, point: Point, *, seq_len: int) -> float:
    """FLOPs the attention core runs per token, forward, backward and recompute (module docstring)."""
    forward = spec.n_layers * 4 * seq_len * spec.hidden * (1.0 if point.attention_for(spec) == "eager" else 0.5)
    passes = 3 + (1 if point.checkpointing in ("full", "selective") else 0)  # "op" keeps the core's output
    return forward * passes


RECOMPUTED_MATMUL_SHARE = {"none": 0.0, "selective": 0.0, "op": 0.5, "full": 1.0}
"""The share of the blocks' forward matmuls each checkpointing value runs again in backward
(torchtitan's per-op policy recomputes every other matmul: `_save_list` and its mm counter)."""


def matmul_flops_per_token(spec: ModelSpec, point: Point) -> tuple[float, float]:
    """(blocks' linears, logit layer) FLOPs per token, forward, backward and full recompute."""
    blocks = 2 * spec.n_layers * spec.layer_matmul_params() * (3 + RECOMPUTED_MATMUL_SHARE[point.checkpointing])
    return blocks, 6 * spec.hidden * spec.vocab_size


def hardware_flops_per_token(spec: ModelSpec, point: Point, *, seq_len: int) -> float:
    """FLOPs the hardware runs per token, recomputation included (Megatron's count: the attention
    core over the full sequence, no causal discount, as the published TFLOP/s count it)."""
    flops = spec.train_flops_per_token(seq_len, recompute=point.checkpointing == "full")
    if point.checkpointing == "selective":
        flops += spec.n_layers * 4 * seq_len * spec.hidden
    if point.checkpointing == "op":
        flops += RECOMPUTED_MATMUL_SHARE["op"] * 2 * spec.n_layers * spec.layer_matmul_params()
    return flops


def _link(hardware: Hardware, params: EfficiencyParams, *, crosses_nodes: bool, ranks_per_node: int = 1) -> Link:
    """One rank's share of the fabric for a collective whose group has `ranks_per_node` ranks on
    each node. Across nodes NCCL runs one ring per NIC, each crossing a node boundary through its
    own NIC (NCCL's multi-rail rings; Jeaugey, "Massively scale your deep learning training with
    NCCL 2.4", 2019), so a group with r ranks per node moves data at up to r NICs' bandwidth per
    rank, never beyond the node's own fabric."""
    if crosses_nodes:
        nic_bytes_per_s = hardware.inter_node_gb_s * 1e9 * max(1, ranks_per_node)
        return Link(bytes_per_s=min(nic_bytes_per_s * params.inter_node_link_efficiency,
                                    hardware.intra_node_gb_s * 1e9 * params.link_efficiency),
                    latency_s=hardware.inter_node_latency_us * 1e-6)
    return Link(bytes_per_s=hardware.intra_node_gb_s * 1e9 * params.link_efficiency,
                latency_s=hardware.intra_node_latency_us * 1e-6)


MODULES_PER_LAYER = 6  # q/k/v, out, up, down projections and two norms: ZeRO-3 gathers each


def data_parallel_comm_s(n_params: int, point: Point, *, dp: int, link: Link,
                         gathered_modules: int = 0) -> tuple[float, float]:
    """(overlappable, not overlappable) seconds of ZeRO's gradient and parameter collectives."""
    size = n_params * element_bytes(point.precision)
    if point.zero_stage <= 1:
        return 0.0, all_reduce_s(size, dp, link)
    if point.zero_stage == 2:
        return point.grad_accum * reduce_scatter_s(size, dp, link), all_gather_s(size, dp, link)
    per_micro_batch = reduce_scatter_s(size, dp, link) + 2 * all_gather_s(size, dp, link)
    # ...gathered module by module, each gather paying the collective's latency steps
    per_micro_batch += 2 * gathered_modules * (all_gather_s(1.0, dp, link) - 1.0 / link.bytes_per_s)
    return point.grad_accum * per_micro_batch, 0.0


def zero_hook_calls(spec: ModelSpec, point: Point) -> int:
    """Host-side ZeRO hook calls per micro-batch that do work (DeepSpeed 0.19): ZeRO-2 reduces each
    parameter's gradient from its hook; ZeRO-3 also gathers and releases each module's parameters
    before and after its forward and its backward. ZeRO-1's hooks only accumulate (the reduction
    waits for the boundary), a cost in the noise; pipeline stages own their share of the modules."""
    if point.zero_stage < 2:
        return 0
    calls = spec.parameter_tensors()
    if point.zero_stage == 3:
        calls += 4 * spec.parameter_modules()
    return math.ceil(calls / point.pp)


def sequence_comm_s(spec: ModelSpec, point: Point, hardware: Hardware, *, seq_len: int,
                    placement: Placement, params: EfficiencyParams) -> tuple[float, float]:
    """(overlappable, exposed) seconds per micro-batch of context- and Ulysses-parallel exchanges."""
    element = element_bytes(point.precision)
    tokens = local_tokens(point, seq_len)
    layers = math.ceil(spec.n_layers / point.pp)
    overlappable = exposed = 0.0
    if point.cp > 1:
        link = _link(hardware, params, crosses_nodes=point.tp * point.sp * point.cp > placement.ranks_per_node,
                     ranks_per_node=min(point.cp, placement.ranks_per_node // (point.tp * point.sp)))
        kv_bytes = 2 * tokens * point.cp * spec.kv_hidden / point.tp * element
        overlappable = 3 * layers * all_gather_s(kv_bytes, point.cp, link)
    if point.sp > 1:
        link = _link(hardware, params, crosses_nodes=point.tp * point.sp > placement.ranks_per_node,
                     ranks_per_node=min(point.sp, placement.ranks_per_node // point.tp))
        passes = 12 if point.checkpointing == "full" else 8
        exposed = passes * layers * all_to_all_s(tokens * spec.hidden / point.tp * element, point.sp, link)
    return overlappable, exposed


def time_breakdown(spec: ModelSpec, point: Point, hardware: Hardware, *, world_size: int, seq_len: int,
                   placement: Placement, params: EfficiencyParams) -> TimeBreakdown:
    shards = zero_shards(point, world_size)
    micro_tokens = local_tokens(point, seq_len)
    ranks_sharing = world_size if placement.shared_device else 1
    peak = hardware.peak_flops("bf16" if point.precision == "fp8" else point.precision) / ranks_sharing
    efficiency = gemm_efficiency(spec, point, seq_len=seq_len, params=params)
    model_ranks = point.tp * point.pp
    blocks_flops, logit_flops = matmul_flops_per_token(spec, point)
    if point.precision == "fp8":
        blocks_flops /= params.fp8_matmul_speedup
    attention_flops = attention_flops_per_token(spec, point, seq_len=seq_len)
    layers_per_stage = math.ceil(spec.n_layers / point.pp)
    if peak > 0:
        micro_batch_s = micro_tokens / model_ranks * ((blocks_flops + logit_flops) / (peak * efficiency)
                                                      + attention_flops / (peak * params.attention_efficiency))
    else:
        micro_batch_s = math.inf
    micro_batch_s += params.layer_overhead_s * layers_per_stage

    element = element_bytes(point.precision)
    tp_link = _link(hardware, params, crosses_nodes=point.tp > placement.ranks_per_node,
                    ranks_per_node=placement.ranks_per_node)
    tp_reduces = 6 if point.checkpointing == "full" else 4
    tp_micro_batch_s = tp_reduces * layers_per_stage * all_reduce_s(micro_tokens * spec.hidden * element, point.tp,
                                                                     tp_link)
    sequence_overlappable_s, sequence_exposed_s = sequence_comm_s(spec, point, hardware, seq_len=seq_len,
                                                                  placement=placement, params=params)

    pp_link = _link(hardware, params, crosses_nodes=world_size // point.pp >= placement.ranks_per_node
                    and point.pp > 1 and world_size > placement.ranks_per_node)
    p2p_micro_batch_s = 0.0
    if point.pp > 1:
        activation_bytes = micro_tokens * spec.hidden * element / (point.tp if point.megatron_sp else 1)
        p2p_micro_batch_s = (2 * point.vpp * send_s(activation_bytes, pp_link)
                             * (1 - params.pipeline_p2p_overlap))

    per_micro_batch_s = micro_batch_s + tp_micro_batch_s + sequence_exposed_s + p2p_micro_batch_s
    compute_s = point.grad_accum * micro_batch_s
    bubble_s = (point.pp - 1) / point.vpp * per_micro_batch_s

    n_params = params_per_rank(spec, point)
    dp_link = _link(hardware, params, crosses_nodes=point.tp * shards > placement.ranks_per_node,
                    ranks_per_node=min(shards, placement.ranks_per_node // point.tp))
    overlappable, exposed = data_parallel_comm_s(n_params, point, dp=shards, link=dp_link,
                                                 gathered_modules=MODULES_PER_LAYER * layers_per_stage + 2)
    # ZeRO-3 prefetches parameters during forward and backward; ZeRO-2 reduces during backward
    window_s = compute_s if point.zero_stage == 3 else compute_s * 2 / 3
    overlappable += point.grad_accum * sequence_overlappable_s
    if point.cp > 1:
        window_s = compute_s
    hidden = min(params.comm_overlap * overlappable, window_s)
    comm_s = (point.grad_accum * (tp_micro_batch_s + sequence_exposed_s + p2p_micro_batch_s)
              + exposed + overlappable - hidden)

    shard = n_params if point.zero_stage == 0 else math.ceil(n_params / shards)
    optimizer_s = offload_s = 0.0
    if point.offload == "none":
        bandwidth = hardware.memory_bandwidth_gb_s * 1e9 / ranks_sharing
        optimizer_s = shard * params.optimizer_bytes_per_param / bandwidth
    else:
        host_s = shard * params.optimizer_bytes_per_param / (params.host_adam_gb_s * 1e9)
        transfer_s = 0.0 if placement.shared_device else shard * (4 + element) / (hardware.host_link_gb_s * 1e9)
        offload_s = host_s + transfer_s
    overhead_s = params.step_overhead_s + point.grad_accum * zero_hook_calls(spec, point) * params.zero_hook_s

    step_s = compute_s + comm_s + bubble_s + optimizer_s + offload_s + overhead_s
    tokens_per_s = point.global_batch(world_size) * seq_len / step_s
    devices = 1 if placement.shared_device else world_size
    model_flops_per_s = tokens_per_s * spec.train_flops_per_token(seq_len)
    tflops_per_gpu = model_flops_per_s / devices / 1e12
    device_peak = hardware.peak_flops(point.precision)
    mfu = tflops_per_gpu * 1e12 / device_peak if device_peak > 0 else 0.0
    return TimeBreakdown(compute_s=compute_s, comm_s=comm_s, bubble_s=bubble_s, optimizer_s=optimizer_s,
                         offload_s=offload_s, overhead_s=overhead_s, step_s=step_s, tokens_per_s=tokens_per_s,
                         tflops_per_gpu=tflops_per_gpu, mfu=mfu, gemm_efficiency=efficiency)
