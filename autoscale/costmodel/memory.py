"""Peak memory of one rank: model states per ZeRO stage, activations, logits, buffers, slack.

Model states follow what DeepSpeed 0.19 actually allocates with the engine's torch AdamW client
optimizer (read from `runtime/fp16/unfused_optimizer.py`, `runtime/zero/stage_1_and_2.py`,
`runtime/zero/stage3.py`), which is the ZeRO paper's accounting (Rajbhandari et al. 2020, Sec. 3.1:
2 + 2 + K bytes per parameter, K = 12 for mixed-precision Adam) plus the fp32 gradient partition
DeepSpeed keeps for its fp32 master weights. `zero_paper_model_states` gives the paper's figure.
Activations follow Korthikanti et al. 2022 (Sec. 4, Table 2), itemised so the same code yields both
the paper's closed forms (dropout, materialised softmax) and our model (no dropout, SDPA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscale.costmodel.params import EfficiencyParams
from autoscale.ds_config import BUCKET_ELEMENTS
from autoscale.models.spec import ModelSpec
from autoscale.point import Point

STAGE3_PREFETCH_ELEMENTS = 50_000_000  # DeepSpeed's stage3_prefetch_bucket_size default
STAGE3_SUB_GROUP_ELEMENTS = 1_000_000_000  # DeepSpeed's sub_group_size default: stage 3 steps per sub-group
LOGITS_CHUNK_TOKENS = 1024  # kernels.fused_linear_cross_entropy.MIN_CHUNK_TOKENS


@dataclass(frozen=True, kw_only=True)
class MemoryBreakdown:
    """Bytes on one rank's device at its peak (host_bytes: on the host, offloaded states).

    peak_bytes = model_states_bytes + overhead_bytes + the larger of the backward phase
    (activations + the loss's buffers + communication buckets + with full recompute one block's
    re-run working set) and the optimizer-step phase (its transient
    fp32 gradient copies, counted in buffers_bytes when larger), or the start-up peak when that is
    larger (below ZeRO-3 the full model is built on every rank before DeepSpeed partitions it;
    ZeRO-3 builds it inside `deepspeed.zero.Init`, partitioned as each module is constructed).
    """

    params: int
    grads: int
    optimizer: int
    model_states_bytes: int
    activations_bytes: int
    logits_bytes: int
    buffers_bytes: int
    overhead_bytes: int
    peak_bytes: int
    host_bytes: int


def element_bytes(precision: str) -> int:
    """Bytes of a parameter, gradient or activation; fp8 training keeps them in bf16 and casts to
    fp8 only for the matmuls (Micikevicius et al. 2022, Sec. 4)."""
    return 4 if precision == "fp32" else 2


def zero_shards(point: Point, world_size: int) -> int:
    """Ranks ZeRO partitions over: the data-, sequence- and context-parallel ranks of one model
    replica slice, i.e. all ranks sharing a tensor- and pipeline-parallel position."""
    return max(1, world_size // (point.tp * point.pp))


def params_per_rank(spec: ModelSpec, point: Point) -> int:
    """Parameters one rank holds before ZeRO sharding: the first pipeline stage (its blocks plus
    the embeddings), split over tensor-parallel ranks (Megatron shards every matrix)."""
    if point.pp == 1:
        return math.ceil(spec.param_count() / point.tp)
    blocks = math.ceil(spec.n_layers / point.pp) * spec.layer_params()
    return math.ceil((blocks + spec.embedding_params()) / point.tp)


def zero_paper_model_states(params: int, dp: int, zero_stage: int, *, k_bytes: int = 12) -> int:
    """The ZeRO paper's model-state bytes per rank (Rajbhandari et al. 2020, Fig. 1 / Sec. 5):
    stage 0: (2+2+K)Ψ; stage 1 (P_os): 4Ψ + KΨ/N; stage 2 (P_os+g): 2Ψ + (2+K)Ψ/N; stage 3: (4+K)Ψ/N."""
    if zero_stage == 0:
        return (4 + k_bytes) * params
    if zero_stage == 1:
        return 4 * params + k_bytes * params // dp
    if zero_stage == 2:
        return 2 * params + (2 + k_bytes) * params // dp
    return (4 + k_bytes) * params // dp


@dataclass(frozen=True)
class ModelStates:
    params: int
    grads: int
    optimizer: int
    host: int
    step_transient: int  # allocated only during the optimizer step


def model_states(params: int, *, precision: str, zero_stage: int, offload: str, dp: int) -> ModelStates:
    """Bytes of parameters, gradients and optimizer states on one rank, as DeepSpeed keeps them.

    fp32, ZeRO-0: the torch AdamW owns params (4), grads (4), exp_avg + exp_avg_sq (8).
    fp16/bf16, ZeRO-0: FP16_UnfusedOptimizer: 16-bit params and grads (2 + 2), fp32 master (4) and
    Adam (8) = the paper's 16, plus fp32 gradient copies (4) made during step().
    ZeRO 1/2/3 (DeepSpeedZeroOptimizer / Stage3): params in the training dtype (sharded at stage 3),
    gradients (sharded from stage 2), fp32 master partition and Adam states sharded from stage 1;
    an fp32 gradient partition (4/N) exists during step(), at stage 3 one sub-group at a time
    (`sub_group_size`). Offload moves master, Adam, the fp32
    gradient partition and a 16-bit staging copy to host memory.
    """
    w = element_bytes(precision)
    if zero_stage == 0:
        if precision == "fp32":
            return ModelStates(4 * params, 4 * params, 8 * params, 0, 0)
        return ModelStates(2 * params, 2 * params, 12 * params, 0, 4 * params)
    shard = math.ceil(params / dp)
    param_bytes = w * (shard if zero_stage == 3 else params)
    grad_bytes = w * (shard if zero_stage >= 2 else params)
    optimizer_bytes = 12 * shard
    fp32_grads = 4 * (min(shard, STAGE3_SUB_GROUP_ELEMENTS) if zero_stage == 3 else shard)
    if offload != "none":
        return ModelStates(param_bytes, grad_bytes, 0, optimizer_bytes + fp32_grads + w * shard, 0)
    return ModelStates(param_bytes, grad_bytes, optimizer_bytes, 0, fp32_grads)


# ---- activations: Korthikanti et al. 2022 ------------------------------------------------------

def korthikanti_layer_bytes(*, seq_len: int, micro_batch: int, hidden: int, n_heads: int, tp: int = 1,
                            checkpointing: str = "none", sequence_parallel: bool = False) -> float:
    """Closed forms of Korthikanti et al. 2022 for one layer (16-bit activations, dropout):
    none: sbh(10 + 24/t + 5as/(ht)) (eq. 2 with t = 1: sbh(34 + 5as/h)); sequence parallel:
    sbh/t (34 + 5as/h) (eq. 4); selective: sbh(10 + 24/t), or sbh·34/t with sequence parallel
    (eq. 6); full: 2sbh (Sec. 4.3)."""
    s, b, h, a, t = seq_len, micro_batch, hidden, n_heads, tp
    sbh = s * b * h
    if checkpointing == "full":
        return 2 * sbh
    attention_scores = 0.0 if checkpointing == "selective" else 5 * a * s / h
    if sequence_parallel:
        return sbh / t * (34 + attention_scores)
    return sbh * (10 + 24 / t + attention_scores / t)


def layer_activation_bytes(spec: ModelSpec, *, tokens: int, seq_len: int, element: int, tp: int = 1,
                           checkpointing: str = "none", dropout: bool = False,
                           attention: str = "sdpa", sequence_parallel: bool = False) -> float:
    """Bytes one block keeps for backward, itemised as in Korthikanti et al. 2022 Sec. 4.1.

    Replicated across tensor-parallel ranks (no sequence parallelism): the two norm inputs, the
    QKV and MLP inputs, dropout masks. Split by t: Q, K, V, the out-projection input, the MLP
    hidden activations and the attention scores. `dropout=True, attention="eager"` with element=2
    reproduces the paper's sbh(34 + 5as/h); our model has no dropout and uses SDPA, which keeps its
    output and log-sum-exp instead of the s x s scores (with "flash" that output is the
    out-projection's input itself: `ModelSpec.attention`). Selective recompute of the
    attention core drops what the core alone keeps; full recompute keeps the block input only.
    Megatron sequence parallelism splits the replicated part over the t ranks too (eq. 4), and the
    checkpointed block input with it.
    """
    h, f, a = spec.hidden, spec.ffn_hidden, spec.n_heads
    replicated_share = 1 / tp if sequence_parallel else 1.0
    if checkpointing == "full":
        return tokens * h * element * replicated_share
    if checkpointing == "op":
        return per_op_layer_bytes(spec, tokens=tokens, element=element, tp=tp, replicated_share=replicated_share)
    kv = h if spec.n_kv_heads != spec.n_heads else spec.kv_hidden  # repeat_interleave materialises
    replicated = tokens * (4 * h * element + (2 * h if dropout else 0))
    mlp_hidden = (3 if spec.activation == "swiglu" else 2) * f
    split = tokens * element * (h + 2 * kv + h + mlp_hidden)  # Q, K, V, out-proj input, MLP
    core = 0.0
    if checkpointing != "selective":
        if attention == "sdpa":
            core = tokens * (h * element + a * 4)  # SDPA output and fp32 log-sum-exp
        elif attention == "flash":
            core = tokens * a * 4  # fp32 log-sum-exp; the output is the out-projection's input
        else:
            core = tokens * a * seq_len * (element + (1 + element if dropout else 0))
    return replicated * replicated_share + (split + core) / tp


def per_op_layer_bytes(spec: ModelSpec, *, tokens: int, element: int, tp: int, replicated_share: float) -> float:
    """What torchtitan's per-operator checkpointing keeps of one block: its input, the attention
    core's output and log-sum-exp, and every other matmul's output (its policy saves aten.mm outputs
    at odd counts of a counter running over the whole forward, so blocks alternate between
    {q, v, up, down} and {k, out, gate}: on average half of q, k, v, out, gate, up, down); norms and
    activations are recomputed (torchtitan `activation_checkpoint`'s `_save_list`)."""
    h, kv = spec.hidden, spec.kv_hidden
    mlp = (2 if spec.activation == "swiglu" else 1) * spec.ffn_hidden
    matmul_outputs = h + 2 * kv + h + mlp + h  # q, k, v, out, the MLP's up (and gate), down
    kept = tokens * element * (h + matmul_outputs / 2) + tokens * spec.n_heads * 4
    return tokens * h * element * replicated_share + kept / tp


def logits_bytes(spec: ModelSpec, *, tokens: int, precision: str, kernels: str, tp: int) -> float:
    """The loss's buffers at their peak (backward through cross-entropy).

    The torch loss (`autoscale/kernels/reference.py`) computes logits in the training dtype, casts them to
    fp32, and cross_entropy keeps log_softmax's fp32 output; backward holds that, the fp32 gradient
    of log_softmax and the fp32 gradient of the logits (3 x 4 bytes per logit), plus the 16-bit
    copies when training in 16 bits. The Triton kernel works in chunks of tokens.
    """
    per_logit = 12 + (2 if precision != "fp32" else 0)
    rows = min(tokens, LOGITS_CHUNK_TOKENS) if kernels == "triton" else tokens
    if kernels == "triton":
        per_logit = element_bytes(precision)
    return rows * spec.vocab_size * per_logit / tp


def local_tokens(point: Point, seq_len: int) -> int:
    """Tokens of one micro-batch on one rank: Ulysses (sp) and context (cp) parallelism split the
    sequence (Jacobs et al. 2023; Liu et al. 2023, ring attention)."""
    return max(1, point.micro_batch * seq_len // (point.sp * point.cp))


def interleave_memory_factor(point: Point) -> float:
    """Extra activations of the interleaved schedule's first stage: 1 + (p-1)/(p·v) (Korthikanti
    et al. 2022, Sec. 4.2.3)."""
    if point.vpp == 1:
        return 1.0
    return 1 + (point.pp - 1) / (point.pp * point.vpp)


def activation_bytes(spec: ModelSpec, point: Point, *, seq_len: int) -> float:
    """Activations of the busiest rank: the first pipeline stage holds min(pp, m) micro-batches in
    flight under 1F1B (Narayanan et al. 2021 Sec. 2.2; Korthikanti et al. 2022 Sec. 4.2.3), each
    with its L/p blocks, more with the interleaved schedule; full recompute adds one block's
    un-checkpointed working set and its gradients during the recompute; plus embeddings and
    final-norm outputs. Each rank keeps its own share of the sequence (sp, cp). The recompute
    working set is `recompute_working_bytes`."""
    tokens = local_tokens(point, seq_len)
    element = element_bytes(point.precision)
    in_flight = min(point.pp, point.grad_accum) if point.pp > 1 else 1
    layers = math.ceil(spec.n_layers / point.pp)
    per_layer = layer_activation_bytes(spec, tokens=tokens, seq_len=seq_len, element=element, tp=point.tp,
                                       checkpointing=point.checkpointing, attention=point.attention_for(spec),
                                       sequence_parallel=point.megatron_sp)
    stored = in_flight * layers * per_layer * interleave_memory_factor(point)
    edges = 3 * tokens * spec.hidden * element
    return stored + edges


def recompute_working_bytes(spec: ModelSpec, point: Point, *, seq_len: int) -> float:
    """Full recompute re-runs one block at a time in backward: its un-checkpointed activations and
    their gradients exist together (Chen et al. 2016, Sec. 4), transiently."""
    if point.checkpointing != "full":
        return 0.0
    return 2 * layer_activation_bytes(spec, tokens=local_tokens(point, seq_len), seq_len=seq_len,
                                      element=element_bytes(point.precision), tp=point.tp,
                                      attention=point.attention_for(spec), sequence_parallel=point.megatron_sp)


def bucket_bytes(params: int, *, precision: str, zero_stage: int, on_cpu: bool) -> float:
    """DeepSpeed's gradient communication buffers during backward.

    ZeRO 1/2 (contiguous_gradients) allocate reduce_bucket_size elements in the training dtype,
    twice with overlap_comm (stage 2); stage 3 one bucket plus the all-gathered parameters of the
    module in use and the prefetch bucket. ZeRO-0 flattens gradients into one all-reduce buffer.
    A GPU reserves a bucket whole; on a CPU only the pages written count in the resident set, so a
    bucket costs at most the gradients it holds.
    """
    w = element_bytes(precision)
    bucket = min(BUCKET_ELEMENTS, params) if on_cpu else BUCKET_ELEMENTS
    if zero_stage == 0:
        return min(BUCKET_ELEMENTS, params) * w
    buffers = 2 if zero_stage == 2 and (not on_cpu or params > BUCKET_ELEMENTS) else 1
    return bucket * w * buffers


def stage3_gathered_bytes(spec: ModelSpec, point: Point) -> float:
    """ZeRO-3 parameters gathered at once: the largest module plus the prefetch bucket."""
    largest = max(spec.layer_params(), spec.vocab_size * spec.hidden) / point.tp
    return (largest + min(STAGE3_PREFETCH_ELEMENTS, largest)) * element_bytes(point.precision)


def memory_breakdown(spec: ModelSpec, point: Point, *, world_size: int, seq_len: int, on_cpu: bool,
                     params: EfficiencyParams) -> MemoryBreakdown:
    dp = zero_shards(point, world_size)
    n_params = params_per_rank(spec, point)
    states = model_states(n_params, precision=point.precision, zero_stage=point.zero_stage,
                          offload=point.offload, dp=dp)
    states_bytes = states.params + states.grads + states.optimizer
    activations = activation_bytes(spec, point, seq_len=seq_len) * params.activation_scale
    recompute = recompute_working_bytes(spec, point, seq_len=seq_len) * params.activation_scale
    logits = logits_bytes(spec, tokens=local_tokens(point, seq_len), precision=point.precision,
                          kernels=point.kernels, tp=point.tp)
    buckets = bucket_bytes(n_params, precision=point.precision, zero_stage=point.zero_stage, on_cpu=on_cpu)
    if point.zero_stage == 3:
        buckets += stage3_gathered_bytes(spec, point)
    # The loss's backward is over before any block is recomputed, yet counting both fits the
    # published peaks (torchtitan's full-recompute runs: median 10.8% against 14.2% with the larger
    # of the two): they are the caching allocator's reserved bytes, which keep freed blocks.
    transient = logits + recompute
    backward_phase = activations + transient + buckets
    step_phase = states.step_transient
    buffers = max(buckets, step_phase - activations - transient)
    working = states_bytes + max(backward_phase, step_phase)
    startup = n_params * (4 if on_cpu else element_bytes(point.precision))  # built whole, then sharded
    if point.zero_stage == 3:
        startup = 0  # built inside deepspeed.zero.Init (`engine.build`): no rank ever holds the whole model
    base = params.host_baseline_bytes if on_cpu else params.device_context_bytes
    if point.zero_stage >= 1:
        per_param = (params.zero3_startup_bytes_per_param if point.zero_stage == 3
                     else params.zero_startup_bytes_per_param)
        base += params.zero_fixed_bytes + per_param * n_params
    overhead = base + params.allocator_slack * max(working, startup)
    peak = max(working, startup) + overhead
    if on_cpu:
        peak += states.host  # host and device are the same memory
    return MemoryBreakdown(params=states.params, grads=states.grads, optimizer=states.optimizer,
                           model_states_bytes=states_bytes, activations_bytes=round(activations),
                           logits_bytes=round(logits), buffers_bytes=round(buffers),
                           overhead_bytes=round(overhead), peak_bytes=round(peak), host_bytes=states.host)
