"""The numerics gate: a config is only as good as the training it computes.

A study's reference run (fp32, ZeRO-0, data parallel only, micro-batch 1, the study's global batch)
records the mean loss over the global batch at each of its first `GATE_STEPS` optimizer steps and
the gradient norm of the first. Every trial trains the same global batches first
(`autoscale.engine.data`) and records the same; a trial whose losses leave the band of its
precision around the reference's is a failed trial of kind `diverged`, never a recommendation.
Losses, not weights, are compared: they are what every layout can report without gathering a
sharded model, and after K steps they carry every update made so far.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from autoscale.engine.request import TrialRequest

GATE_STEPS = 4
NUMERICS_FILE = "numerics.json"  # rank 0 writes the trial's first losses here, next to result.json
DIVERGED = "diverged"

RELATIVE_LOSS_TOLERANCE = {"fp32": 1e-4, "bf16": 1e-3, "fp16": 1e-3}
"""The largest relative gap |loss - reference| / reference, over the gate's steps, of a correct config.

Measured here (DeepSpeed 0.19.8, torch CPU, 2 gloo ranks, global batch 8, seq 64, 4 steps, against
the fp32 ZeRO-0 micro-batch-1 reference) over gpt-tiny and llama-tiny at ZeRO 0-3 with micro-batch
1, 2 and 4, and gpt-tiny with tp 2:
fp32: at most 9.4e-8 (sums in another order). 1e-4 is three orders above that and below the gap of
training on other data or another update (1e-3 and more: one step moves gpt-tiny's loss by 1.6e-3).
bf16: at most 3.3e-4 (gpt-tiny at ZeRO-0, DeepSpeed's bf16 optimizer, with and without tp 2),
1.1e-4 at ZeRO 1-3, 5.2e-5 for llama-tiny; 1e-3 is three times the worst. It cannot see a single
lost update of a model whose loss moves less than 1e-3 in one step (llama-tiny's moved 2.8e-4):
the first gradient norm's band (below) and later steps' drift are what catch such configs.
fp16: DeepSpeed's CPU accelerator refuses fp16, so it is not measured here; fp16 rounds 8 times
finer than bf16 (10 mantissa bits against 7), so bf16's band is the conservative choice. A step
skipped for a loss-scale overflow leaves the weights as they were and shows as a gap like any lost
update.
"""

RELATIVE_GRAD_NORM_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-3, "fp16": 5e-3}
"""The largest relative gap of the first gradient norm to the reference's, of a correct config.

Measured as above: fp32 at most 1.2e-6; bf16 at most 6.5e-4 (gpt-tiny) and 3.4e-4 (llama-tiny),
so 5e-3 leaves nearly a factor of 8. The errors it exists for are factors, not fractions: a
gradient summed where it should be averaged (x2 on 2 ranks), a norm over one pipeline stage's
parameters only (0.83x in DeepSpeed's pipeline with ZeRO-0 and clipping). These were measured on
models of about a million parameters; a larger model widens the band (`grad_norm_tolerance`).
"""

FP32_UNIT_ROUNDOFF = 2.0**-24
SUMMATION_LAMBDA = 5.0
"""A sum of n terms in floating point, reordered, moves by at most lambda * sqrt(n) * u of the sum of
their magnitudes with probability at least 1 - 2 exp(-lambda^2 / 2) (Higham & Mary, "A New Approach
to Probabilistic Rounding Error Analysis", SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4): at
lambda = 5, all but 7.5e-6 of orders. Another layout sums a gradient's squares (positive terms, so
the bound is relative) in another order, over shards and ranks."""

MAX_GRAD_NORM_TOLERANCE = 0.05
"""The band never widens past this: the smallest gradient error seen in a real layout bug (a norm
over one pipeline stage's parameters, 0.83x) must stay three times past it at any model size."""


def grad_norm_tolerance(precision: str, params: int) -> float:
    """The first gradient norm's band for a model of `params` parameters: the measured band of its
    precision, or the reordered sum of `params` squares' bound when that is wider. Two runs each
    carry one reordering's error and the square root halves the sum's, so the gap's bound is
    lambda * sqrt(params) * u. A 118M-parameter ZeRO-2 fp32 trial measured 3.3e-4 against its
    reference; this gives it 3.3e-3, while a wrong scale (x2, x0.83) stays a factor past it. Measured
    here: gpt-125m at ZeRO-2 and ZeRO-3, fp32, 2 CPU ranks, global batch 2 x 32 tokens, 7.2e-5 (60
    times gpt-tiny's 1.2e-6), against a band of 3.3e-3. Capped
    at `MAX_GRAD_NORM_TOLERANCE` (reached near 28B parameters)."""
    reordering = SUMMATION_LAMBDA * math.sqrt(max(params, 1)) * FP32_UNIT_ROUNDOFF
    return min(MAX_GRAD_NORM_TOLERANCE, max(RELATIVE_GRAD_NORM_TOLERANCE[precision], reordering))


@dataclass(frozen=True)
class NumericsRecord:
    """A run's mean loss over the global batch at each of its first steps, and its first gradient norm."""

    losses: tuple[float, ...]
    grad_norm0: float | None

    @classmethod
    def from_dict(cls, data: dict) -> "NumericsRecord":
        return cls(losses=tuple(data["losses"]), grad_norm0=data["grad_norm0"])

    def as_dict(self) -> dict:
        return asdict(self)


def loss_gap(losses: tuple[float, ...], reference: tuple[float, ...]) -> float:
    """The largest relative gap between a trial's losses and the reference's, step by step."""
    if len(losses) < len(reference):
        raise ValueError(f"{len(losses)} losses to compare with a reference of {len(reference)}")
    return max(abs(loss - ref) / abs(ref) for loss, ref in zip(losses, reference))


def grad_norm_gap(record: NumericsRecord, reference: NumericsRecord) -> float | None:
    """The relative gap of the first gradient norms; None when either run could not report one."""
    if record.grad_norm0 is None or reference.grad_norm0 is None:
        return None
    return abs(record.grad_norm0 - reference.grad_norm0) / reference.grad_norm0


def divergence(record: NumericsRecord, reference: NumericsRecord, precision: str, *, params: int = 0) -> str | None:
    """Why `record` does not train what `reference` trains (a failure reason), or None when it does.

    The first gradient norm is checked as well as the losses: AdamW's update barely changes when
    every gradient is scaled by a constant, and clipping hides a wrong norm once both exceed the
    threshold, so a mis-scaled or mis-counted gradient can leave the first losses inside the band.
    `params`: the model's parameter count, which widens the gradient norm's band (`grad_norm_tolerance`)."""
    norm_gap = grad_norm_gap(record, reference)
    norm_tolerance = grad_norm_tolerance(precision, params)
    if norm_gap is not None and norm_gap > norm_tolerance:
        return (f"{DIVERGED}: first gradient norm {record.grad_norm0:.6f} vs the reference's "
                f"{reference.grad_norm0:.6f}, a relative gap of {norm_gap:.2e} past the {precision} band "
                f"{norm_tolerance:.1e} of {params / 1e6:,.1f}M parameters")
    gap = loss_gap(record.losses, reference.losses)
    tolerance = RELATIVE_LOSS_TOLERANCE[precision]
    if gap <= tolerance:
        return None
    step = max(range(len(reference.losses)), key=lambda i: abs(record.losses[i] - reference.losses[i]))
    return (f"{DIVERGED}: loss gap {gap:.2e} exceeds the {precision} band {tolerance:.0e} over the first "
            f"{len(reference.losses)} steps (step {step}: {record.losses[step]:.6f} vs the reference's "
            f"{reference.losses[step]:.6f})")


def gate_steps(request: "TrialRequest") -> int:
    """The first steps whose losses a trial records: as many as the reference's (GATE_STEPS for the
    reference itself), and none for a config measured again after it passed (`TrialRequest.gate`)."""
    if not request.gate:
        return 0
    return len(request.reference.losses) if request.reference else GATE_STEPS


def write_record(record: NumericsRecord, workdir: Path) -> None:
    (workdir / NUMERICS_FILE).write_text(json.dumps(record.as_dict()))


def read_record(workdir: Path) -> NumericsRecord:
    return NumericsRecord.from_dict(json.loads((workdir / NUMERICS_FILE).read_text()))


def run_reference(run: Callable, request) -> tuple[NumericsRecord | None, str | None]:
    """Run the reference trial with `run` (the study's own launcher); its record, or None and why not."""
    result = run(request)
    if not result.ok:
        return None, f"the reference run failed ({result.reason}): trials are not checked against it"
    if not (request.workdir / NUMERICS_FILE).exists():
        return None, "the reference run left no numerics record: trials are not checked against it"
    return read_record(request.workdir), None
