"""The cost model's free parameters: one frozen dataclass, global defaults, calibrated files.

Everything the datasheets do not say (how close GEMMs get to peak, how much of the link NCCL
achieves, how much communication hides behind the backward pass, fixed per-step costs, the
process's own resident memory on CPU) is a named field here. Defaults are global: one set for
GPUs, one for CPUs, never tuned per model. `autoscale calibrate` fits a subset of them to measured
trials and saves them as YAML under `$AUTOSCALE_CALIBRATION_DIR` (default
`~/.config/autoscale/calibration/`), one file per hardware name; `load_params` prefers that file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from autoscale.errors import UserError

MIB = 2**20


@dataclass(frozen=True, kw_only=True)
class EfficiencyParams:
    """Named efficiency parameters of the time and memory models (units in the names).

    GEMM efficiency is `gemm_efficiency_max * w / (w + gemm_half_width) * n / (n + gemm_half_tokens)`,
    with w the geometric mean of a layer's weight-matrix sides on one rank and n the tokens of one
    micro-batch: saturating in both, the shape cuBLAS roofline measurements take.
    """

    gemm_efficiency_max: float = 0.62
    """Fraction of peak a large GEMM-bound transformer layer reaches (fwd+bwd, norms and
    elementwise ops folded in). Megatron-LM reaches 52-57% of A100 peak on its largest runs."""
    gemm_half_width: float = 256.0
    """GEMM side (elements) at which width alone halves the efficiency."""
    gemm_half_tokens: float = 256.0
    """Tokens per micro-batch at which the token count alone halves the efficiency."""
    attention_efficiency: float = 0.62
    """Fraction of the 16-bit peak the attention core (scores, softmax, product with V, forward
    and backward) reaches; flash kernels run below the GEMMs' figure (Dao 2023, Table 1)."""
    fp8_matmul_speedup: float = 1.0
    """How much faster the blocks' linears run in fp8 than in bf16, scaling and casts included
    (the datasheet's 2x is the ceiling)."""
    half_precision_speed: float = 1.0
    """Multiplier on the GEMM efficiency for fp16/bf16 relative to the datasheet's 16-bit peak (a
    CPU without native bf16 dot products converts, and runs slower than its nominal figure)."""
    link_efficiency: float = 0.8
    """Fraction of the datasheet link bandwidth a ring collective achieves inside a node (NCCL bus
    bandwidth over NVLink or PCIe)."""
    inter_node_link_efficiency: float = 0.8
    """The same across nodes, where NIC, switch and rail layout differ per cluster."""
    comm_overlap: float = 0.7
    """Fraction of overlappable data-parallel communication hidden behind backward
    (ZeRO-2/3 with DeepSpeed's overlap_comm); stage 0/1 reduce after backward, unhidden."""
    pipeline_p2p_overlap: float = 0.5
    """Fraction of pipeline send/receive time hidden behind compute."""
    layer_overhead_s: float = 2e-4
    """Fixed cost per layer per micro-batch (fwd+bwd): kernel launches, Python dispatch."""
    step_overhead_s: float = 5e-3
    """Fixed cost per optimizer step: DeepSpeed's bookkeeping, gradient-norm, loss sync."""
    zero_hook_s: float = 3e-5
    """Host time of one ZeRO hook call, per micro-batch: ZeRO-2's gradient hook per parameter
    tensor (copy into the reduction bucket, reduce when full) and ZeRO-3's gather and release hooks
    per module in forward and backward. Python-dispatched and partly synchronising (ZeRO-3 waits
    for its gathers), so it is counted in full on GPUs too, like `layer_overhead_s`. The GPU
    default is an order-of-magnitude guess for a Python hook on a server CPU, not a measurement."""
    optimizer_bytes_per_param: float = 36.0
    """Memory traffic of one Adam update per fp32 master parameter (read p, g, m, v; write p, m, v;
    16-bit copy back)."""
    host_adam_gb_s: float = 20.0
    """Host memory bandwidth an offloaded (CPU) optimizer step achieves per rank."""
    activation_scale: float = 1.0
    """Multiplier on the Korthikanti activation count (framework temporaries beyond it)."""
    allocator_slack: float = 0.05
    """Fraction of the device peak lost to allocator fragmentation and rounding."""
    host_baseline_bytes: float = 0.0
    """Resident memory of one rank before the model exists (Python, torch, DeepSpeed, the process
    group): what the peak RSS of a CPU rank starts from; zero on GPUs (device memory)."""
    zero_fixed_bytes: float = 0.0
    """Fixed resident cost of a DeepSpeed ZeRO optimizer (stages 1-3) beyond its buffers: measured
    on CPU ranks (about 60 MiB: its modules and threads); zero on GPUs (host memory, not device)."""
    zero_startup_bytes_per_param: float = 0.0
    """Bytes per parameter left resident from ZeRO-1/2 start-up (the model built in fp32, cast,
    then flattened into contiguous groups): glibc keeps freed heap pages, which VmHWM counts. CPU
    only; a GPU's caching allocator reuses them."""
    zero3_startup_bytes_per_param: float = 0.0
    """Bytes per parameter resident on a ZeRO-3 CPU rank beyond its model states. Not a whole copy:
    ZeRO-3 trials build the model partitioned (`engine.build`, `deepspeed.zero.Init`); it is what
    glibc keeps of the whole-module tensors that zero.Init, the forward's gathers and the gradient
    reduce-scatters allocate and free (peaks measured with and without zero.Init agree within a
    few percent). CPU only; a GPU's caching allocator reuses them."""
    device_context_bytes: float = 0.0
    """Device memory taken before the model (CUDA context, NCCL buffers); not in the allocator's
    peak the engine measures, so zero by default."""


GPU_DEFAULTS = EfficiencyParams(attention_efficiency=0.2, pipeline_p2p_overlap=0.0)
"""A GPU outside the fitted families (below): the datasheet-scale guesses, the attention core at
about the fitted families' level. Pipeline sends hide behind nothing: DeepSpeed's PipelineEngine
runs them as blocking instructions between the compute ones (runtime/pipe/engine.py, p2p.py)."""

GPU_FAMILY_DEFAULTS = {
    "a100": replace(GPU_DEFAULTS, gemm_efficiency_max=0.705, attention_efficiency=0.265, link_efficiency=1.0,
                    inter_node_link_efficiency=0.470, comm_overlap=0.717),
    "h100": replace(GPU_DEFAULTS, gemm_efficiency_max=0.566, attention_efficiency=0.159, link_efficiency=0.590,
                    inter_node_link_efficiency=1.0, comm_overlap=0.890, fp8_matmul_speedup=1.637),
}
"""Efficiencies fitted to published training runs (`benchmarks/validate_gpu.py`, which prints this
fit and the leave-one-source-out fits beside it): least squares on log tokens/s per GPU over
Narayanan et al. 2021, Korthikanti et al. 2022, BLOOM-176B, Llama 3, torchtitan and llm-foundry,
one set per GPU family (`Hardware.family`; H200 and Meta's 96 GB H100 are "h100"). Other people's
measurements, with DeepSpeed, Megatron-LM, FSDP and torchtitan; a trial-based calibration
(`autoscale calibrate`) replaces them for one machine."""

GPU_MEMORY_ERROR = 0.20
"""Relative error of the predicted peak on the published GPU runs whose peak memory is printed and
whose recompute policy the model describes (`benchmarks/validate_gpu.py` prints the derivation
under its memory table: BLOOM's 177B variant and torchtitan's full-recompute runs, 13 rows,
median |error| 10.8%, largest 19.0%, rounded up). The runs at torchtitan's per-operator
checkpointing (checkpointing "op", `memory.per_op_layer_bytes`) are scored apart, out of sample.
A CUDA point predicted past the margin by less than this may still fit."""
CPU_DEFAULTS = EfficiencyParams(
    gemm_efficiency_max=0.45, gemm_half_width=64.0, gemm_half_tokens=64.0, half_precision_speed=1.0,
    link_efficiency=0.5,
    comm_overlap=0.3, layer_overhead_s=1.5e-3, step_overhead_s=2e-2, zero_hook_s=2e-4,
    optimizer_bytes_per_param=36.0,
    host_adam_gb_s=5.0, activation_scale=1.0, allocator_slack=0.0, host_baseline_bytes=437 * MIB,
    zero_fixed_bytes=60 * MIB, zero_startup_bytes_per_param=3.4, zero3_startup_bytes_per_param=15.0,
)
"""CPU ranks: oneDNN GEMMs on two cores reach less of the FMA peak, Python dispatch is a larger
share, gloo shares memory bandwidth. zero_hook_s was read off the stage medians of the first round
of benchmarks/data/cpu-sweep-gpt-tiny-r3 (ZeRO-2 steps about 30 ms longer than ZeRO-0's, over 52
parameter tensors and 2-4 micro-batches). The memory terms were measured with
`benchmarks/validate_memory.py` (2 ranks, Python 3.11, torch 2.13, DeepSpeed 0.19):
host_baseline_bytes from gpt-tiny at ZeRO-0 (VmHWM less our model's bytes), the ZeRO terms from
the residuals of gpt-cpu-small at stages 1-3 (ZeRO-3's by least squares on the gpt-tiny and
gpt-cpu-small trials built under zero.Init; the held-out ZeRO-3 trials are within -6% and +10%);
`autoscale calibrate` re-fits them per machine."""


CPU_WARM_DEFAULTS = replace(CPU_DEFAULTS, host_baseline_bytes=370 * MIB, zero_fixed_bytes=5 * MIB)
"""CPU ranks forked from a warm server (`autoscale tune`'s default launcher): the server imported
torch, DeepSpeed and the ZeRO optimizers before the fork, so a child's peak resident set leaves out
what those imports cost a fresh process. Read off the medians of
benchmarks/data/cpu-sweep-gpt-tiny-r3 (warm ranks): the CPU defaults over-predicted its ZeRO-0
points by 67 MiB and its ZeRO-1-3 points by 122 MiB. llama-tiny's sweep (66 and 115 MiB) is the
held-out check."""


def default_params(hardware_name: str, *, warm_ranks: bool = False) -> EfficiencyParams:
    """`warm_ranks`: the trials run in children of a warm fork server, which only matters on CPU.
    A GPU takes its family's fitted efficiencies (catalog entries only; others the GPU defaults)."""
    if hardware_name != "cpu":
        from autoscale.hardware import catalog

        entry = catalog().get(hardware_name)
        return GPU_FAMILY_DEFAULTS.get(entry.family if entry else "", GPU_DEFAULTS)
    return CPU_WARM_DEFAULTS if warm_ranks else CPU_DEFAULTS


def calibration_dir() -> Path:
    override = os.environ.get("AUTOSCALE_CALIBRATION_DIR")
    return Path(override) if override else Path.home() / ".config" / "autoscale" / "calibration"


def calibration_path(hardware_name: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in hardware_name)
    return calibration_dir() / f"{safe}.yaml"


def save_params(params: EfficiencyParams, path: Path, *, note: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"note": note, "params": {k: float(v) for k, v in asdict(params).items()}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def read_params(path: Path, base: EfficiencyParams) -> EfficiencyParams:
    """Parameters from a calibration file; fields it lacks keep `base`'s values."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"calibration file {str(path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    values = raw.get("params", {}) if isinstance(raw, dict) else {}
    known = {f.name for f in fields(EfficiencyParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"calibration file {str(path)!r}: unknown parameters {', '.join(unknown)}")
    return replace(base, **{k: float(v) for k, v in values.items()})


def calibration_in_use(hardware_name: str) -> str:
    """One line saying which parameters predictions for this hardware use, for every command that predicts."""
    path = calibration_path(hardware_name)
    if not path.exists():
        return f"calibration: none for {hardware_name} (default parameters)"
    try:
        note = (yaml.safe_load(path.read_text()) or {}).get("note", "")
    except (yaml.YAMLError, AttributeError, OSError):
        note = ""
    return f"calibration: {path}" + (f" ({note})" if note else "") + "; undo with `autoscale calibrate --reset`"


def reset_calibrations(hardware_name: str | None = None) -> list[Path]:
    """Remove the applied calibration of one hardware entry (or of all); return the files removed."""
    folder = calibration_dir()
    paths = [calibration_path(hardware_name)] if hardware_name else sorted(folder.glob("*.yaml"))
    removed = [path for path in paths if path.is_file()]
    for path in removed:
        path.unlink()
    return removed


def load_params(hardware_name: str, *, warm_ranks: bool = False) -> EfficiencyParams:
    """Calibrated parameters for this hardware if a calibration file exists, else the defaults."""
    base = default_params(hardware_name, warm_ranks=warm_ranks)
    path = calibration_path(hardware_name)
    return read_params(path, base) if path.exists() else base
