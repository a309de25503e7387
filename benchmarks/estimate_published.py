"""Published runs through `autoscale estimate`, and the 70B plan per target: the figures users get.

    python benchmarks/estimate_published.py [--data DIR] [--megatron-csv PATH]

Each run of `published_gpu_runs.csv` (all of it, llm-foundry's rows included) and of Narayanan et
al.'s `published_runs.csv` is given to `estimate` (`commands.estimate.estimate_spec`, what
`autoscale estimate --json` runs) as published, every knob fixed: one call per candidate where the
source leaves the micro-batch or the interleaving unprinted (`costmodel.gpu_runs`), the fastest
predicted to fit kept. Prediction uses the shipped GPU defaults (`costmodel.params`), fitted on these
sources: the error here is in-sample; `validate_gpu.py` scores it leave-one-source-out. Then the
plan of `tune --model llama-3.1-70b --backend model --hardware h100-sxm --gpus 64 --global-batch 128
--seq-len 8192` under each target (`planning.plan`'s choices, `plan_cluster`). Exit status 0: a report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

from autoscale.commands.estimate import estimate_spec
from autoscale.costmodel import plan_cluster
from autoscale.costmodel.gpu_runs import PublishedRun, megatron_runs, published_gpu_table
from autoscale.errors import UserError
from autoscale.hardware import get_hardware
from autoscale.layout_targets import LAYOUT_TARGETS
from autoscale.models import resolve_model
from autoscale.planning import choices_for_cluster
from autoscale.space import load_space

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / "data"
GIB = 2**30
PLAN = dict(model="llama-3.1-70b", hardware="h100-sxm", gpus=64, global_batch=128, seq_len=8192)


def estimate_run(run: PublishedRun) -> tuple[dict | None, str | None]:
    """`estimate`'s answer for the run's fastest candidate predicted to fit (its fastest when none
    fits), or None and the reason estimate refused every candidate."""
    results, reasons = [], Counter()
    for knobs in run.candidate_knobs:
        try:
            results.append(estimate_spec(run.spec, run.hardware, gpus=run.world_size, seq_len=run.seq_len,
                                         global_batch=run.global_batch, fixed=_in_full(knobs)))
        except UserError as error:
            reasons[getattr(error, "rule", str(error))] += 1
    if not results:
        return None, reasons.most_common(1)[0][0]
    fitting = [r for r in results if r["fits"]]
    return max(fitting or results, key=lambda r: r["tokens_per_s"]), None


def _in_full(knobs: dict) -> dict:
    from autoscale.point import KNOBS

    return {knob.name: knobs.get(knob.name, knob.default) for knob in KNOBS}


def published_table(title: str, runs: list[PublishedRun]) -> None:
    print(f"\n== {title}: {len(runs)} runs through estimate, each as published ==")
    predicted, refused, not_fit, errors, engine_refused = 0, Counter(), [], [], Counter()
    per_source: dict[str, list[float]] = {}
    for run in runs:
        result, reason = estimate_run(run)
        if result is None:
            refused[reason] += 1
            continue
        predicted += 1
        error = result["tokens_per_s"] / run.world_size / run.measured_tokens_per_s_per_gpu - 1
        errors.append(abs(error))
        per_source.setdefault(run.source, []).append(abs(error))
        if not result["fits"]:
            not_fit.append((run, result))
        rule = result["run_by"][run.target.name]
        if rule is not None:
            engine_refused[f"{run.target.engine}: {rule}"] += 1
    print(f"predicted {predicted} of {len(runs)}; refused {sum(refused.values())}"
          + "".join(f"\n  refused ({count}): {reason}" for reason, count in refused.items()))
    print(f"predicted not to fit: {len(not_fit)}" + "".join(
        f"\n  {run.source} {run.label}: {r['memory']['peak_bytes'] / GIB:.1f} GiB against "
        f"{r['usable_bytes'] / GIB:.1f} GiB usable" for run, r in not_fit))
    if errors:
        print(f"tokens/s per GPU |error| (in-sample): median {statistics.median(errors):.1%}, max {max(errors):.1%}")
    for source, source_errors in per_source.items():
        print(f"  {source:<12} {len(source_errors):>4} runs  median {statistics.median(source_errors):6.1%}  "
              f"max {max(source_errors):6.1%}")
    print("layouts the run's own engine refuses: " + (", ".join(f"{n} {r}" for r, n in engine_refused.items())
                                                      or "none"))


def plan_table(target_name: str | None) -> None:
    spec, hardware = resolve_model(PLAN["model"]), get_hardware(PLAN["hardware"])
    target = LAYOUT_TARGETS[target_name or "deepspeed"]
    choices = choices_for_cluster(load_space("default"), spec, hardware, PLAN["gpus"], PLAN["global_batch"], target)
    plan = plan_cluster(spec, hardware, PLAN["gpus"], global_batch=PLAN["global_batch"], seq_len=PLAN["seq_len"],
                        target=target, choices=choices)
    label = f"--target {target_name}" if target_name else f"no --target ({target.engine})"
    print(f"\n== plan: {PLAN['model']} on {PLAN['gpus']} x {PLAN['hardware']}, global batch {PLAN['global_batch']} "
          f"x {PLAN['seq_len']}, {label}: {len(plan.ranked)} layouts predicted, {len(plan.fitting)} fit ==")
    for point, prediction in plan.fitting[:5]:
        time = prediction.time
        print(f"  {point.short():<36} {prediction.tokens_per_s:>9,.0f} tok/s  MFU {time.mfu:5.1%}  "
              f"peak {prediction.peak_bytes / GIB:5.1f} GiB  compute {time.compute_s:.2f} s  comm {time.comm_s:.2f} s  "
              f"bubble {time.bubble_s:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "gpu")
    parser.add_argument("--megatron-csv", type=Path, default=DATA / "published_runs.csv")
    args = parser.parse_args(argv)
    print("published measurements by their authors (sources in the data's SOURCES.md), not ours")
    published_table("published_gpu_runs.csv", published_gpu_table(args.data / "published_gpu_runs.csv"))
    published_table("Megatron-LM (Narayanan et al. 2021)", megatron_runs(args.megatron_csv))
    for target in (None, "megatron", "torchtitan", "megatron-deepspeed"):
        plan_table(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
