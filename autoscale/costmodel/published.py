"""Predicting published training runs: the time model's validation against real measurements.

Rows of `published_runs.csv` (see its README: Narayanan et al. 2021 Table 1; A100 80 GB, fp16,
full recomputation, no ZeRO, interleaved pipeline where pp > 1, attention before flash kernels)
become a ModelSpec and a Point;
each point is built by `layout.build_point` under Megatron-LM's rules (`layout_targets`);
the micro-batch is the fastest that fits (the paper does not list it), and the interleaved
schedule uses v = the largest divisor of the layers per stage not above `MAX_CHUNKS`. Published
TFLOP/s count hardware FLOPs, recomputation included (96·B·s·l·h²(1 + s/6h + V/16lh)), which is
`ModelSpec.train_flops_per_token(recompute=True)`; the prediction is compared in those units.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from autoscale.costmodel.params import EfficiencyParams, default_params
from autoscale.costmodel.predict import Prediction, predict
from autoscale.errors import RuleError
from autoscale.hardware import get_hardware
from autoscale.layout import build_point
from autoscale.layout_targets import LAYOUT_TARGETS
from autoscale.models.spec import ModelSpec

MAX_CHUNKS = 4
MICRO_BATCHES = (1, 2, 4, 8, 16)


@dataclass(frozen=True, kw_only=True)
class PublishedComparison:
    model: str
    source: str
    gpus: int
    tp: int
    pp: int
    micro_batch: int
    pipeline_chunks: int
    published_tflops: float
    predicted_tflops: float
    prediction: Prediction

    @property
    def error(self) -> float:
        return self.predicted_tflops / self.published_tflops - 1


def read_published(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def row_spec(row: dict) -> ModelSpec:
    return ModelSpec(name=row["model"], n_layers=int(row["layers"]), hidden=int(row["hidden"]),
                     n_heads=int(row["heads"]), vocab_size=int(row["vocab"]), max_seq_len=int(row["seq_len"]),
                     attention="eager", source=row["source"])


def interleave_chunks(layers_per_stage: int, pp: int) -> int:
    if pp == 1:
        return 1
    return max(v for v in range(1, MAX_CHUNKS + 1) if layers_per_stage % v == 0)


def predict_row(row: dict, params: EfficiencyParams) -> PublishedComparison:
    spec, hardware = row_spec(row), get_hardware(row["gpu"])
    gpus, tp, pp = int(row["gpus"]), int(row["tp"]), int(row["pp"])
    seq_len, global_batch = int(row["seq_len"]), int(row["global_batch"])
    chunks = interleave_chunks(math.ceil(spec.n_layers / pp), pp)
    best = None
    for micro_batch in MICRO_BATCHES:
        try:
            point = build_point({"zero_stage": 0, "micro_batch": micro_batch, "precision": "fp16",
                                 "checkpointing": "full", "tp": tp, "pp": pp, "vpp": chunks}, global_batch=global_batch,
                                world_size=gpus, spec=spec, target=LAYOUT_TARGETS["megatron"])
        except RuleError:  # this micro-batch cannot make the global batch
            continue
        prediction = predict(spec, point, hardware, world_size=gpus, seq_len=seq_len, params=params)
        if prediction.fits and (best is None or prediction.time.tokens_per_s > best[1].time.tokens_per_s):
            best = (point, prediction)
    if best is None:
        raise ValueError(f"{row['model']}: no micro-batch fits")
    point, prediction = best
    hardware_flops = spec.train_flops_per_token(seq_len, recompute=True)
    predicted = prediction.time.tokens_per_s * hardware_flops / gpus / 1e12
    return PublishedComparison(model=spec.name, source=row["source"], gpus=gpus, tp=tp, pp=pp,
                               micro_batch=point.micro_batch, pipeline_chunks=chunks,
                               published_tflops=float(row["tflops_per_gpu"]), predicted_tflops=predicted,
                               prediction=prediction)


def compare_published(path: Path, params: EfficiencyParams | None = None) -> list[PublishedComparison]:
    """Every row predicted with ONE parameter set (the GPU defaults unless given)."""
    params = params or default_params("a100-80gb")
    return [predict_row(row, params) for row in read_published(path)]
