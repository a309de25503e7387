"""Peak memory per rank: measured CPU trials against the cost model and DeepSpeed's own estimator.

Runs real 2-rank CPU trials through the engine (`autoscale.engine.run_trial`) for `gpt-tiny` and a
larger CPU model (GPT-2-small's shape shrunk to fit two CPU cores, seq 128) over ZeRO stages 0-3
and prints, per trial, the measured peak resident memory (VmHWM of the largest rank), ours and
DeepSpeed's estimator (model states only, plus the same measured process baseline so both are
compared on the same footing), with the errors per stage.

    python benchmarks/validate_memory.py [--measured FILE] [--rerun]

Measurements are kept in `--measured` (JSON records with the host and time) so the comparison can
be re-printed after a model change without re-running trials; `--rerun` measures again.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autoscale.costmodel import deepspeed_model_states_bytes, load_params, predict
from autoscale.hardware import local_cpu
from autoscale.models import PRESETS, ModelSpec
from autoscale.point import Point

SEQ_LEN = 128
NPROC = 2
GPT_CPU_SMALL = ModelSpec(name="gpt-cpu-small", n_layers=6, hidden=512, n_heads=8, vocab_size=8192,
                          max_seq_len=SEQ_LEN, source="GPT-2 small's shape shrunk for 2 CPU cores")
GPT_CPU_HOLDOUT = ModelSpec(name="gpt-cpu-holdout", n_layers=8, hidden=384, n_heads=6, vocab_size=4096,
                            max_seq_len=SEQ_LEN, source="a shape the CPU defaults were not fitted on")
SPECS = {spec.name: spec for spec in (PRESETS["gpt-tiny"], PRESETS["llama-tiny"], GPT_CPU_SMALL, GPT_CPU_HOLDOUT)}
DEFAULT_MEASURED = Path(__file__).with_name("data") / "memory_measured.json"


def trials() -> list[tuple[ModelSpec, Point, bool]]:
    """(model, point, held out): the CPU defaults' memory terms were fitted on the first 12 only."""
    fitted = [(spec, Point(zero_stage=stage, micro_batch=4, grad_accum=1, precision=precision), False)
              for spec, precision in ((PRESETS["gpt-tiny"], "fp32"), (GPT_CPU_SMALL, "fp32"), (GPT_CPU_SMALL, "bf16"))
              for stage in (0, 1, 2, 3)]
    held_out = [(GPT_CPU_HOLDOUT, Point(zero_stage=stage, micro_batch=8, grad_accum=1, precision="fp32"), True)
                for stage in (0, 1, 2, 3)]
    held_out += [(GPT_CPU_SMALL, Point(zero_stage=stage, micro_batch=8, grad_accum=2, precision="bf16",
                                       checkpointing="selective"), True) for stage in (0, 2, 3)]
    held_out += [(PRESETS["llama-tiny"], Point(zero_stage=1, micro_batch=4, grad_accum=1, precision="fp32",
                                               checkpointing="full"), True)]
    return fitted + held_out


def measure(spec: ModelSpec, point: Point) -> dict:
    from autoscale.engine import MeasurePolicy, TrialRequest, run_trial

    with tempfile.TemporaryDirectory(prefix="autoscale-mem-") as workdir:
        request = TrialRequest(spec=spec, point=point, seq_len=SEQ_LEN, backend="cpu", nproc=NPROC,
                               workdir=Path(workdir), timeout_s=300.0,
                               measure=MeasurePolicy(warmup_steps=1, min_steps=2, max_steps=2))
        result = run_trial(request)
    return {"model": spec.name, "point": point.as_dict(), "status": result.status, "reason": result.reason,
            "peak_bytes": result.peak_bytes, "step_s": result.step_s, "tokens_per_s": result.tokens_per_s,
            "host": platform.node(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def load_or_measure(path: Path, rerun: bool) -> list[dict]:
    if path.exists() and not rerun:
        return json.loads(path.read_text())
    records = []
    for spec, point, held_out in trials():
        record = measure(spec, point) | {"held_out": held_out}
        print(f"measured {spec.name} {point.describe()}: {record['status']} {record['peak_bytes']}",
              file=sys.stderr, flush=True)
        records.append(record)
    path.write_text(json.dumps(records, indent=1) + "\n")
    return records


def compare(records: list[dict]) -> list[dict]:
    hardware = local_cpu()
    params = load_params(hardware.name)
    rows = []
    for record in records:
        if record["status"] != "ok":
            continue
        spec, point = SPECS[record["model"]], Point.from_dict(record["point"])
        prediction = predict(spec, point, hardware, world_size=NPROC, seq_len=SEQ_LEN, params=params)
        theirs = deepspeed_model_states_bytes(spec, point, world_size=NPROC) + params.host_baseline_bytes
        measured = record["peak_bytes"]
        rows.append({"model": spec.name, "point": point, "held_out": record.get("held_out", False),
                     "precision": point.precision, "zero": point.zero_stage,
                     "measured": measured, "ours": prediction.memory.peak_bytes, "deepspeed": theirs,
                     "ours_error": prediction.memory.peak_bytes / measured - 1,
                     "deepspeed_error": theirs / measured - 1})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", type=Path, default=DEFAULT_MEASURED)
    parser.add_argument("--rerun", action="store_true")
    args = parser.parse_args(argv)
    rows = compare(load_or_measure(args.measured, args.rerun))
    mib = 2**20
    print(f"{'model':<16} {'point':<34} {'measured MiB':>13} {'ours MiB':>9} {'err':>7} "
          f"{'DeepSpeed MiB':>14} {'err':>7}")
    for row in rows:
        p = row["point"]
        label = (f"Z{p.zero_stage} {p.precision} mb{p.micro_batch}x{p.grad_accum} {p.checkpointing}"
                 + (" (held out)" if row["held_out"] else ""))
        print(f"{row['model']:<16} {label:<34} {row['measured'] / mib:>13.0f} "
              f"{row['ours'] / mib:>9.0f} {row['ours_error']:>+7.1%} {row['deepspeed'] / mib:>14.0f} "
              f"{row['deepspeed_error']:>+7.1%}")
    held = [abs(row["ours_error"]) for row in rows if row["held_out"]]
    if held:
        print(f"\nheld-out trials: median |error| {statistics.median(held):.1%}, max {max(held):.1%}")
    print("\nmedian |error| per ZeRO stage, all trials (ours / DeepSpeed's estimator):")
    for stage in (0, 1, 2, 3):
        stage_rows = [row for row in rows if row["zero"] == stage]
        if stage_rows:
            ours = statistics.median(abs(row["ours_error"]) for row in stage_rows)
            theirs = statistics.median(abs(row["deepspeed_error"]) for row in stage_rows)
            print(f"  ZeRO-{stage}: {ours:.1%} / {theirs:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
