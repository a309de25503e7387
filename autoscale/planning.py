"""`autoscale tune --backend model`: the whole search on the cost model, for a cluster we cannot run on.

Every point of the space is predicted (tensor- and pipeline-parallel degrees included: a space
that leaves them at 1 gets every degree the cluster can lay out), predicted OOMs are recorded as
pruned, and the fastest fitting point becomes `ds_config.json`. Every figure written is a
prediction and says so: `summary.json` has `"predicted": true` and its `provenance` line, trials.csv's
fitting points have status `predicted` with their figures only in the pred_* columns, the report
carries a banner, and the console prints it.
"""

from __future__ import annotations

from dataclasses import replace

from autoscale.costmodel import Prediction, load_params, plan_cluster, predict, worth_the_risk
from autoscale.costmodel.planner import candidate_values
from autoscale.engine.request import TrialResult
from autoscale.errors import UserError
from autoscale.hardware import Hardware
from autoscale.layout_targets import TRIAL_ENGINE, LayoutTarget
from autoscale.point import baseline_point, get_knob
from autoscale.provenance import utc_now
from autoscale.results import RunInfo, TrialRecord, write_summary, write_trials_csv
from autoscale.space import SearchSpace

MAX_ROWS = 500  # fitting points kept in trials.csv, fastest first; the rest are counted


WIDENED = ("tp", "pp", "vpp", "megatron_sp", "sp", "cp")
"""The layout knobs a space that leaves at their default gets every value of, where the target runs them
(sp and cp only when nothing fits without them: `plan_cluster`)."""


def choices_for_cluster(space: SearchSpace, spec, hardware: Hardware, gpus: int, global_batch: int,
                         target: LayoutTarget) -> dict[str, list]:
    choices = {knob: list(values) for knob, values in space.choices.items()}
    candidates = candidate_values(spec, hardware, gpus, global_batch=global_batch, target=target)
    for knob in WIDENED:
        if choices[knob] == [get_knob(knob).default]:
            choices[knob] = list(candidates[knob])
    return choices


def predicted_result(prediction: Prediction) -> TrialResult:
    return TrialResult(status="ok", tokens_per_s=prediction.tokens_per_s, tflops_per_device=prediction.time.tflops_per_gpu,
                       mfu=prediction.time.mfu, peak_bytes=prediction.peak_bytes, step_s=prediction.time.step_s)


def without_fp16_twins(ranked: list[tuple]) -> tuple[list[tuple], int]:
    """Drop each fp16 point predicted exactly as its bf16 twin (same knobs otherwise): on hardware
    where both run at one rate the model cannot tell them apart, and bf16 needs no loss scaling, so
    the twin would only fill the plan's top list with a duplicate. Returns the rest and the count."""
    predicted = {point: (prediction.tokens_per_s, prediction.peak_bytes) for point, prediction in ranked}
    kept = [(point, prediction) for point, prediction in ranked
            if point.precision != "fp16" or predicted.get(replace(point, precision="bf16")) != predicted[point]]
    return kept, len(ranked) - len(kept)


def plan(*, spec, space: SearchSpace, hardware: Hardware, gpus: int, global_batch: int, seq_len: int,
         info: RunInfo, out_dir, target: LayoutTarget = TRIAL_ENGINE) -> tuple[list[TrialRecord], dict]:
    params = load_params(hardware.name)
    try:
        cluster = plan_cluster(spec, hardware, gpus, global_batch=global_batch, seq_len=seq_len, params=params,
                               target=target,
                               choices=choices_for_cluster(space, spec, hardware, gpus, global_batch, target))
    except UserError as error:
        raise UserError(f"space {space.name!r}: {error}") from None
    ranked, skipped = cluster.ranked, cluster.skipped

    def predictor(point) -> Prediction:
        return predict(spec, point, hardware, world_size=gpus, seq_len=seq_len, params=params)

    ranked, fp16_twins = without_fp16_twins(ranked)
    fitting = [(p, pr) for p, pr in ranked if pr.fits]
    pruned = sorted(((p, pr) for p, pr in ranked if not pr.fits), key=lambda pair: pair[1].peak_bytes)
    now = utc_now()
    records = [TrialRecord(number=i, point=point, status="ok", result=predicted_result(prediction),
                           pred_peak_bytes=prediction.peak_bytes, pred_tokens_per_s=prediction.tokens_per_s,
                           started_at=now, finished_at=now)
               for i, (point, prediction) in enumerate(fitting[:MAX_ROWS])]
    records += [TrialRecord(number=len(records) + i, point=point, status="pruned", reason=prediction.pruned_reason(),
                            pred_peak_bytes=prediction.peak_bytes, pred_tokens_per_s=prediction.tokens_per_s,
                            started_at=now, finished_at=now)
                for i, (point, prediction) in enumerate(pruned[:50])]
    if global_batch % gpus == 0:
        baseline = baseline_point(global_batch, gpus)
        prediction = predictor(baseline)
        if prediction.fits:
            records.append(TrialRecord(number=None, point=baseline, status="ok", is_baseline=True,
                                       result=predicted_result(prediction), pred_peak_bytes=prediction.peak_bytes,
                                       pred_tokens_per_s=prediction.tokens_per_s, started_at=now, finished_at=now))
    write_trials_csv(records, out_dir / "trials.csv", predicted=True)
    info = replace(info, predicted=True, evaluated={
        "layout_target": target.name, "points": len(ranked) + fp16_twins, "fitting": len(fitting),
        "predicted_oom": len(pruned), "borderline_faster": len(worth_the_risk(ranked)),
        "skipped_by_rule": dict(skipped), "fp16_same_as_bf16": fp16_twins})
    summary = write_summary(info, records, out_dir / "summary.json")
    return records, summary
