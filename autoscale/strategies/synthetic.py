"""A SYNTHETIC replay table: the cost model's predictions with made-up errors, never measurements.

For developing the replay before a measured table exists. Each knob value gets one systematic
throughput factor (the kind of error a cost model makes: it misjudges what, say, bf16 on this CPU
is worth), each point a smaller independent one, and each point's peak memory one too; a point
whose perturbed peak exceeds a rank's memory is recorded as an OOM failure. Because the "truth"
is built from the cost model, a strategy seeded by the cost model is favoured: read results from
such a table as a check that the machinery works, not as evidence that a strategy is good.
"""

from __future__ import annotations

import numpy as np

from autoscale.costmodel import point_predictor
from autoscale.engine.request import TrialResult
from autoscale.hardware import Hardware
from autoscale.models.spec import ModelSpec
from autoscale.results import TrialRecord
from autoscale.provenance import utc_now, versions
from autoscale.point import KNOB_NAMES as KNOBS
from autoscale.space import SearchSpace
from autoscale.strategies.replay import ReplayTable, sidecar_dict


def synthetic_records(*, spec: ModelSpec, hardware: Hardware, world_size: int, seq_len: int, global_batch: int,
                      space: SearchSpace, seed: int, knob_sigma: float, point_sigma: float,
                      memory_sigma: float) -> list[TrialRecord]:
    """One record per point: predicted tokens/s and peak times log-normal factors (sigmas in log units)."""
    rng = np.random.default_rng(seed)
    knob_factor = {(knob, value): float(np.exp(rng.normal(0, knob_sigma)))
                   for knob in KNOBS for value in space.choices[knob]}
    predictor = point_predictor(spec, hardware, world_size=world_size, seq_len=seq_len)
    records = []
    for number, point in enumerate(space.points(global_batch=global_batch, world_size=world_size)):
        prediction = predictor(point)
        if prediction is None:
            result = TrialResult.failed("crash: synthetic: the cost model cannot lay this point out")
        else:
            peak = int(prediction.peak_bytes * np.exp(rng.normal(0, memory_sigma)))
            tokens_per_s = prediction.tokens_per_s * float(np.exp(rng.normal(0, point_sigma)))
            for knob in KNOBS:
                tokens_per_s *= knob_factor[(knob, getattr(point, knob))]
            if peak > prediction.budget.device_bytes:
                result = TrialResult.failed(f"oom: synthetic: peak {peak} B above {prediction.budget.device_bytes} B")
            else:
                result = TrialResult(status="ok", tokens_per_s=tokens_per_s, samples_per_s=tokens_per_s / seq_len,
                                     peak_bytes=peak, step_s=global_batch * seq_len / tokens_per_s)
        records.append(TrialRecord(number=number, point=point, status=result.status, reason=result.reason,
                                   result=result,
                                   pred_peak_bytes=prediction.peak_bytes if prediction else None,
                                   pred_tokens_per_s=prediction.tokens_per_s if prediction else None))
    return records


def synthetic_table(*, name: str, spec: ModelSpec, hardware: Hardware, world_size: int, seq_len: int,
                    global_batch: int, space: SearchSpace, backend: str, seed: int = 0, knob_sigma: float = 0.15,
                    point_sigma: float = 0.03, memory_sigma: float = 0.05) -> tuple[ReplayTable, list[TrialRecord], dict]:
    """The table, its records (to write as CSV) and its sidecar, marked synthetic throughout."""
    records = synthetic_records(spec=spec, hardware=hardware, world_size=world_size, seq_len=seq_len,
                                global_batch=global_batch, space=space, seed=seed, knob_sigma=knob_sigma,
                                point_sigma=point_sigma, memory_sigma=memory_sigma)
    sidecar = sidecar_dict(name=name, synthetic=True, spec=spec, hardware=hardware, world_size=world_size,
                           seq_len=seq_len, global_batch=global_batch, backend=backend, space=space,
                           recorded_at=utc_now(), versions=versions(),
                           note=(f"SYNTHETIC: cost-model predictions x log-normal errors (knob sigma {knob_sigma}, "
                                 f"point sigma {point_sigma}, memory sigma {memory_sigma}, seed {seed}); "
                                 "not measured"))
    table = ReplayTable(name=name, synthetic=True, spec=spec, hardware=hardware, world_size=world_size,
                        seq_len=seq_len, global_batch=global_batch, space=space,
                        results={r.point.key(): r.result for r in records})
    return table, records, sidecar
