"""Published GPU training runs as the cost model sees them: a ModelSpec, candidate Points, the
hardware, and what was measured (tokens/s per GPU, and the peak memory where printed).

Reads `published_gpu_runs.csv` (Korthikanti et al. 2022, BLOOM-176B, Llama 3 405B, torchtitan)
and `llmfoundry_all.csv` (all llm-foundry rows; its 27 rows in the first file are skipped there),
and Narayanan et al. 2021's Megatron rows (`published_runs.csv`, `costmodel.published`),
with the conventions of their SOURCES.md. Throughput is compared as tokens/s per GPU: from the
iteration time where printed, else from the source's own FLOPs convention (Korthikanti et al.
2022 App. A for MFU-only rows; PaLM's 6N + 12·L·h·s for Llama 3's TFLOP/s, Chowdhery et al. 2022
App. B). A knob the source does not print (Llama 3's micro-batch and interleaving, torchtitan's
pipeline split) becomes several candidate points: the run is predicted at the fastest candidate
predicted to fit, as its operators would have tuned it. Mapping choices that are not printed
knobs: Megatron-era runs (Korthikanti, BLOOM) use eager attention, torchtitan PyTorch's SDPA,
llm-foundry flash_attn; BLOOM's ALiBi has no parameters (position "rotary" counts none either); torch.compile is
the "compile" kernel set; llm-foundry's fused cross-entropy keeps no fp32 logits, which the
"triton" kernel set's fused loss models (it undercounts the one bf16 logits buffer llm-foundry
keeps); async TP and fp8 scaling recipes are implementation details the model does not
distinguish. Each run's candidates are built by `layout.build_point`, the function `estimate` and
plans use, under the engine that trained it (`TARGETS`, `layout_targets`): its published layout is
kept as it is (FSDP under a pipeline stays ZeRO-3), and a candidate its engine refuses is dropped
with the engine's reason.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from autoscale.errors import RuleError
from autoscale.hardware import Hardware, get_hardware
from autoscale.layout import build_point
from autoscale.layout_targets import LAYOUT_TARGETS, LayoutTarget
from autoscale.models.presets import PRESETS
from autoscale.models.spec import ModelSpec
from autoscale.point import Point

GIB = 2**30
SOURCES = ("narayanan", "korthikanti", "bloom", "llama3", "torchtitan", "llm-foundry")
MICRO_BATCH_CANDIDATES = (1, 2, 4, 8)
VPP_CANDIDATES = (1, 2, 4)


TARGETS = {"narayanan": "megatron", "korthikanti": "megatron", "bloom": "megatron-deepspeed",
           "llama3": "torchtitan", "torchtitan": "torchtitan", "llm-foundry": "composer"}
"""The engine (`layout_targets`) each source trained with. Llama 3's is Meta's own (FSDP with tp, pp
and cp, Dubey et al. 2024 Sec. 3.3.2); torchtitan is the public engine that combines the same."""


@dataclass(frozen=True, kw_only=True)
class PublishedRun:
    """One published measurement: the setting, the candidate layouts (knobs the source prints, and
    each value of those it does not), and the measured figures."""

    source: str  # one of SOURCES
    label: str
    spec: ModelSpec
    hardware: Hardware
    world_size: int
    seq_len: int
    global_batch: int
    candidate_knobs: tuple[dict, ...]
    measured_tokens_per_s_per_gpu: float
    measured_peak_bytes: float | None = None
    sweep: str = ""  # rows sharing a sweep differ only in layout
    notes: str = field(default="", compare=False)

    @property
    def target(self) -> LayoutTarget:
        return LAYOUT_TARGETS[TARGETS[self.source]]

    @cached_property
    def _built(self) -> tuple[tuple[Point, ...], tuple[str, ...]]:
        points, refusals = [], []
        for knobs in self.candidate_knobs:
            try:
                points.append(build_point(knobs, global_batch=self.global_batch, world_size=self.world_size,
                                          spec=self.spec, target=self.target))
            except RuleError as error:
                refusals.append(str(error))
        return tuple(points), tuple(refusals)

    @property
    def candidates(self) -> tuple[Point, ...]:
        """The candidate layouts that can be laid out and that the run's engine runs (`layout.build_point`)."""
        return self._built[0]

    @property
    def refusals(self) -> tuple[str, ...]:
        """Why each candidate left out of `candidates` was refused, naming the rule's engine."""
        return self._built[1]


def source_of(text: str) -> str:
    lowered = text.lower()
    for key, needle in (("korthikanti", "korthikanti"), ("bloom", "bigscience"), ("llama3", "llama team"),
                        ("torchtitan", "torchtitan"), ("llm-foundry", "llm-foundry")):
        if needle in lowered:
            return key
    raise ValueError(f"unknown source {text[:60]!r}")


def _number(text: str) -> float | None:
    text = (text or "").strip().rstrip("%")
    return float(text) if text else None


def _precision(text: str) -> str:
    return {"fp8+bf16": "fp8", "fp16": "fp16", "bf16": "bf16"}.get(text, "bf16")


def _checkpointing(text: str) -> str:
    return text if text in ("full", "selective") else "none"


def _megatron_gpt(row: dict, *, attention: str, position: str) -> ModelSpec:
    return ModelSpec(name=row["model"], n_layers=int(float(row["layers"])), hidden=int(float(row["hidden"])),
                     n_heads=int(float(row["heads"])), vocab_size=int(float(row["vocab"])),
                     max_seq_len=int(row["seq_len"]), attention=attention, position=position,
                     source=row["source"])


def _llama(row: dict) -> ModelSpec:
    """The released Llama configuration the row names (presets), at the row's sequence length."""
    name = row["model"].lower()
    size = re.search(r"(\d+)b", name).group(1)
    key = f"llama-2-{size}b" if "llama-2" in name else f"llama-3.1-{size}b"
    preset = PRESETS[key]
    vocab = int(float(row["vocab"])) if row.get("vocab") else preset.vocab_size
    return ModelSpec(**{**preset.__dict__, "name": row["model"], "vocab_size": vocab,
                        "max_seq_len": max(int(row["seq_len"]), preset.max_seq_len)})


MPT_SHAPES = {"125m": (12, 768, 12), "350m": (24, 1024, 16), "760m": (24, 1536, 12), "1b": (24, 2048, 16),
              "3b": (32, 2560, 20), "7b": (32, 4096, 32), "13b": (40, 5120, 40), "30b": (48, 7168, 56),
              "70b": (80, 8192, 64)}
"""llm-foundry's scripts/train/yamls/pretrain/mpt-*.yaml: layers, d_model, heads (SOURCES.md)."""


def mpt_spec(size: str, seq_len: int) -> ModelSpec:
    """MPT: expansion 4 GELU, no biases, learned positions, tied embeddings, vocab 50368, flash."""
    layers, hidden, heads = MPT_SHAPES[size]
    return ModelSpec(name=f"mpt-{size}", n_layers=layers, hidden=hidden, n_heads=heads, vocab_size=50368,
                     max_seq_len=seq_len, bias=False, attention="flash", source="llm-foundry mpt yamls")


def _knobs(*, zero_stage: int, precision: str, checkpointing: str, tp: int, pp: int, cp: int,
           micro_batches, vpps, megatron_sp: bool, kernels: str = "torch") -> tuple[dict, ...]:
    """One knob set per candidate micro-batch and interleaving, the rest as published."""
    return tuple({"zero_stage": zero_stage, "micro_batch": micro_batch, "precision": precision,
                  "checkpointing": checkpointing, "tp": tp, "pp": pp, "cp": cp, "vpp": vpp, "kernels": kernels,
                  "megatron_sp": megatron_sp and tp > 1}
                 for micro_batch in micro_batches for vpp in (vpps if pp > 1 else (1,)))


def _peak_bytes(notes: str) -> float | None:
    match = re.search(r"peak mem ([\d.]+) GiB", notes)
    if match:
        return float(match.group(1)) * GIB
    match = re.search(r"(\d+)GB mem", notes)
    return float(match.group(1)) * 1e9 if match else None


def _published_row(row: dict) -> PublishedRun | None:
    source = source_of(row["source"])
    if source == "llm-foundry":
        return None  # read from llmfoundry_all.csv
    notes = row["notes"]
    gpus, tp, pp, dp = int(row["gpus"]), int(row["tp"]), int(row["pp"]), int(row["dp"])
    cp = int(float(row["cp"])) if row["cp"] else 1
    seq_len = int(row["seq_len"])
    precision = _precision(row["precision"])
    checkpointing = _checkpointing(row["checkpointing"])
    if source == "torchtitan" and checkpointing == "selective" and "layer)" not in notes:
        # torchtitan's selective mode with its default selective_ac_option "op" is its per-operator
        # policy; the rows that ran option "layer" (every other block whole) stay the nearest, selective
        checkpointing = "op"
    zero_stage = int(row["zero_stage"])
    micro = _number(row["micro_batch"])
    global_batch = int(float(row["global_batch"])) if row["global_batch"] else None
    if source in ("korthikanti", "bloom"):
        spec = _megatron_gpt(row, attention="eager", position="learned" if source == "korthikanti" else "rotary")
    else:
        spec = _llama(row)
    if global_batch is None:  # torchtitan's long-sequence PP rows: local batch 8 per data-parallel rank
        global_batch = 8 * dp
    micro_batches = (int(micro),) if micro else MICRO_BATCH_CANDIDATES
    if source == "torchtitan" and pp > 1:  # torchtitan splits the local batch into pp micro-batches
        micro_batches = (max(1, global_batch // dp // pp),)
    vpps = VPP_CANDIDATES
    if source == "korthikanti":  # Sec. 6: interleaved, 3 chunks per rank, for 175B and 530B
        vpps = (3,) if spec.n_layers in (96, 105) else (1,)
    elif source == "bloom" or "schedule 1F1B" in notes or ", 1F1B," in notes:
        vpps = (1,)
    elif "Interleaved" in notes:
        vpps = (2, 4)
    megatron_sp = ("sequence parallelism ON" in notes or source == "torchtitan"
                   or (source == "llama3"))
    if source == "korthikanti":  # "present work" is selective recompute with sequence parallelism
        megatron_sp = checkpointing == "selective"
    candidates = _knobs(zero_stage=zero_stage, precision=precision, checkpointing=checkpointing, tp=tp, pp=pp,
                        cp=cp, micro_batches=micro_batches, vpps=vpps, megatron_sp=megatron_sp,
                        kernels="compile" if "compile" in notes else "torch")
    tokens = seq_len * global_batch
    measured = _number(row["measured_tokens_per_s_per_gpu"])
    iteration_s = _number(row["measured_iter_s"])
    if measured is None and iteration_s:
        measured = tokens / (iteration_s * gpus)
    if measured is None and source == "korthikanti":
        measured = _number(row["measured_mfu"]) / 100 * 312e12 / korthikanti_model_flops_per_token(spec, seq_len)
    if measured is None and source == "llama3":
        measured = _number(row["measured_tflops_per_gpu"]) * 1e12 / palm_flops_per_token(spec, seq_len)
    sweep = ""
    if source == "bloom":
        sweep = f"bloom {spec.name.split(' ')[0]} L{spec.n_layers} h{spec.hidden} a{spec.n_heads} {precision}"
    return PublishedRun(source=source, label=f"{row['model']} {gpus}g tp{tp} pp{pp} cp{cp}", spec=spec,
                        hardware=get_hardware("a100-80gb-jean-zay" if source == "bloom" else row["gpu"]),
                        world_size=gpus, seq_len=seq_len, global_batch=global_batch, candidate_knobs=candidates,
                        measured_tokens_per_s_per_gpu=measured, measured_peak_bytes=_peak_bytes(notes),
                        sweep=sweep, notes=notes)


def korthikanti_model_flops_per_token(spec: ModelSpec, seq_len: int) -> float:
    """Model FLOPs per token, Korthikanti et al. 2022 App. A: 72·L·h²·(1 + s/6h + V/12hL)."""
    h, layers = spec.hidden, spec.n_layers
    return 72 * layers * h * h * (1 + seq_len / (6 * h) + spec.vocab_size / (12 * h * layers))


def palm_flops_per_token(spec: ModelSpec, seq_len: int) -> float:
    """PaLM's model FLOPs per token (Chowdhery et al. 2022, App. B): 6N + 12·L·h·s, N without the
    input embedding."""
    n_params = spec.param_count() - spec.vocab_size * spec.hidden
    return 6 * n_params + 12 * spec.n_layers * spec.hidden * seq_len


def _foundry_row(row: dict) -> PublishedRun | None:
    if row["Activation CPUOffload"] == "True":
        return None
    size, seq_len, gpus = row["Model"], int(row["SeqLen (T)"]), int(row["# GPUs"])
    micro, accum = int(row["MicroBatchSize"]), int(row["GradAccum"])
    precision = "fp8" if "fp8" in row["Precision"] else "bf16"
    zero_stage = 3 if row["Sharding Strategy"] == "FULL_SHARD" else 2
    knobs = {"zero_stage": zero_stage, "micro_batch": micro, "precision": precision, "kernels": "triton",
             "checkpointing": "full" if row["Activation Checkpointing"] == "True" else "none"}
    gpu = {"h100_80gb": "h100-sxm", "a100_80gb": "a100-80gb", "a100_40gb": "a100-40gb"}[row["GPU"]]
    return PublishedRun(source="llm-foundry", label=f"mpt-{size} s{seq_len} {gpus}g {gpu} {precision}",
                        spec=mpt_spec(size, seq_len), hardware=get_hardware(gpu), world_size=gpus,
                        seq_len=seq_len, global_batch=micro * accum * gpus, candidate_knobs=(knobs,),
                        measured_tokens_per_s_per_gpu=float(row["Throughput (T/s/GPU)"]),
                        sweep=f"llm-foundry mpt-{size} {gpu} {precision} s{seq_len}")


def _narayanan_row(row: dict) -> PublishedRun:
    """Narayanan et al. 2021 Table 1, as `costmodel.published` reads it; the TFLOP/s count hardware
    FLOPs with full recompute, turned into tokens/s per GPU with the same count."""
    from autoscale.costmodel.published import MICRO_BATCHES, interleave_chunks, row_spec

    spec = row_spec(row)
    gpus, tp, pp, seq_len = int(row["gpus"]), int(row["tp"]), int(row["pp"]), int(row["seq_len"])
    vpp = interleave_chunks(math.ceil(spec.n_layers / pp), pp)
    candidates = _knobs(zero_stage=0, precision="fp16", checkpointing="full", tp=tp, pp=pp, cp=1,
                        micro_batches=MICRO_BATCHES, vpps=(vpp,), megatron_sp=False)
    measured = float(row["tflops_per_gpu"]) * 1e12 / spec.train_flops_per_token(seq_len, recompute=True)
    return PublishedRun(source="narayanan", label=f"{spec.name} {gpus}g tp{tp} pp{pp}", spec=spec,
                        hardware=get_hardware(row["gpu"]), world_size=gpus, seq_len=seq_len,
                        global_batch=int(row["global_batch"]), candidate_knobs=candidates,
                        measured_tokens_per_s_per_gpu=measured)


def _foundry_published_row(row: dict) -> PublishedRun:
    """An llm-foundry row of `published_gpu_runs.csv` (the same runs as `llmfoundry_all.csv`'s, in
    that table's columns)."""
    size, seq_len, gpus = row["model"].split("-", 1)[1].lower(), int(row["seq_len"]), int(row["gpus"])
    precision = _precision(row["precision"])
    knobs = {"zero_stage": int(row["zero_stage"]), "micro_batch": int(float(row["micro_batch"])),
             "precision": precision, "checkpointing": _checkpointing(row["checkpointing"]), "kernels": "triton"}
    return PublishedRun(source="llm-foundry", label=f"mpt-{size} s{seq_len} {gpus}g {row['gpu']} {precision}",
                        spec=mpt_spec(size, seq_len), hardware=get_hardware(row["gpu"]), world_size=gpus,
                        seq_len=seq_len, global_batch=int(float(row["global_batch"])), candidate_knobs=(knobs,),
                        measured_tokens_per_s_per_gpu=float(row["measured_tokens_per_s_per_gpu"]),
                        notes=row["notes"])


def published_gpu_table(path: Path) -> list[PublishedRun]:
    """Every row of `published_gpu_runs.csv`, llm-foundry's included (`load_published_runs` reads
    those from `llmfoundry_all.csv`, which holds them and more)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [_foundry_published_row(row) if source_of(row["source"]) == "llm-foundry" else _published_row(row)
            for row in rows]


def megatron_runs(path: Path) -> list[PublishedRun]:
    """Narayanan et al. 2021's rows (`published_runs.csv`), under Megatron-LM's rules."""
    with path.open(newline="") as handle:
        return [_narayanan_row(row) for row in csv.DictReader(handle)]


def load_published_runs(directory: Path, megatron_csv: Path | None = None) -> list[PublishedRun]:
    """Every usable row of the two CSVs in `directory` and of Narayanan et al.'s `megatron_csv`
    (rows with CPU activation offload, which the cost model does not model, are left out)."""
    runs = megatron_runs(megatron_csv) if megatron_csv is not None else []
    with (directory / "published_gpu_runs.csv").open(newline="") as handle:
        runs += [run for run in map(_published_row, csv.DictReader(handle)) if run is not None]
    with (directory / "llmfoundry_all.csv").open(newline="") as handle:
        runs += [run for run in map(_foundry_row, csv.DictReader(handle)) if run is not None]
    return runs


def tokens_per_s_per_gpu(run: PublishedRun, tokens_per_s: float) -> float:
    return tokens_per_s / run.world_size

