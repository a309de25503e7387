"""Peak memory per rank on this machine's device: measured trials against the cost model's prediction.

Each point runs as a real trial through the warm launcher. On CUDA a trial reports two figures: the
one held against the memory limit (NVML's per-process figure, which counts the CUDA context and
NCCL's buffers, where NVML answers) and the caching allocator's peak reserved bytes; both are set
beside the cost model's prediction for the same point. On CPU the figure is the peak resident set.

    python benchmarks/device_memory.py --backend cuda --nproc 1 --model gpt-125m --json memory.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from autoscale.costmodel import point_predictor
from autoscale.engine import MeasurePolicy, TrialRequest, open_runner
from autoscale.hardware import detect
from autoscale.models import resolve_model
from autoscale.point import Point

MEASURE = MeasurePolicy(warmup_steps=1, min_steps=2, max_steps=3, target_rse=1.0, max_measure_s=20)
GIB = 2**30


def points(precision: str) -> list[Point]:
    """Five layouts whose memory differs for different reasons: batch, ZeRO stage, recomputation."""
    return [Point(zero_stage=0, micro_batch=4, grad_accum=1, precision=precision),
            Point(zero_stage=0, micro_batch=16, grad_accum=1, precision=precision),
            Point(zero_stage=0, micro_batch=16, grad_accum=1, precision=precision, checkpointing="full"),
            Point(zero_stage=2, micro_batch=8, grad_accum=1, precision=precision),
            Point(zero_stage=3, micro_batch=8, grad_accum=1, precision=precision)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-125m")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--points", type=int, default=5, help="the first N of the five layouts")
    parser.add_argument("--timeout-per-trial", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    spec = resolve_model(args.model)
    predict = point_predictor(spec, detect(args.backend), world_size=args.nproc, seq_len=args.seq_len,
                              warm_ranks=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="autoscale-memory-") as work, \
            open_runner("warm", run_dir=Path(work), backend=args.backend) as run:
        for index, point in enumerate(points(args.precision)[:args.points]):
            result = run(TrialRequest(spec=spec, point=point, seq_len=args.seq_len, backend=args.backend,
                                      nproc=args.nproc, workdir=Path(work) / f"point-{index}", measure=MEASURE,
                                      timeout_s=args.timeout_per_trial))
            prediction = predict(point)
            predicted = prediction.peak_bytes if prediction else None
            rows.append({"point": point.as_dict(), "description": point.describe(), "status": result.status,
                         "reason": result.reason, "peak_bytes": result.peak_bytes,
                         "peak_allocator_bytes": result.peak_allocator_bytes, "predicted_peak_bytes": predicted,
                         "predicted_error": predicted / result.peak_bytes - 1 if predicted and result.peak_bytes
                         else None})
            print(f"{point.describe():<48} {result.status:<7}"
                  f" peak {gib(result.peak_bytes)}  allocator {gib(result.peak_allocator_bytes)}"
                  f"  predicted {gib(predicted)}  {result.reason}", flush=True)
            if args.json:  # after every point: a run stopped at its time limit keeps what it measured
                args.json.write_text(json.dumps({"model": spec.name, "backend": args.backend, "nproc": args.nproc,
                                                 "seq_len": args.seq_len, "rows": rows}, indent=1) + "\n")


def gib(value: int | None) -> str:
    return f"{value / GIB:7.2f} GiB" if value is not None else f"{'-':>11}"


if __name__ == "__main__":
    main()
