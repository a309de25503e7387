"""Per-trial overhead of three ways to run the same trial, measured side by side in one run.

  deepspeed-launcher: `deepspeed --num_gpus N --module autoscale.engine.rank ...`, a fresh
                      DeepSpeed launcher start per trial (what DeepSpeed's autotuner does)
  fresh:              autoscale's own fresh process group per trial (`--launcher fresh`)
  warm:               autoscale's warm fork servers (`--launcher warm`, the default)

Overhead = a trial's wall time minus the time of its timed steps. Modes are interleaved round by
round so load from other jobs on a shared machine hits them alike. Prints a table; the issue's
goal is warm overhead <= 1/4 of the DeepSpeed launcher's, at equal tokens/s (within noise).

    python benchmarks/trial_overhead.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoscale.engine import MeasurePolicy, TrialRequest, TrialResult, WarmPool, run_trial
from autoscale.engine.launch import free_port
from autoscale.engine.multinode import default_launcher
from autoscale.models import resolve_model
from autoscale.point import Point

MEASURE = MeasurePolicy(warmup_steps=2, min_steps=5, max_steps=5, target_rse=0.0, max_measure_s=60)


def deepspeed_launcher() -> str:
    """The hostfile launcher's `deepspeed` script (beside this interpreter, so a venv need not be
    activated), else the one on PATH."""
    beside = default_launcher()
    return beside if Path(beside).exists() else shutil.which("deepspeed") or "deepspeed"


def via_deepspeed_launcher(request: TrialRequest) -> TrialResult:
    request.workdir.mkdir(parents=True, exist_ok=True)
    request_path, result_path = request.workdir / "request.json", request.workdir / "result.json"
    request_path.write_text(request.to_json())
    argv = [deepspeed_launcher(), "--num_gpus", str(request.nproc), "--no_local_rank",
            "--master_port", str(free_port()), "--module", "autoscale.engine.rank", str(request_path), str(result_path)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"} if request.backend == "cpu" else dict(os.environ)
    started = time.monotonic()
    with open(request.workdir / "launcher.log", "wb") as log:
        subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=request.timeout_s, check=False)
    wall_s = time.monotonic() - started
    if not result_path.exists():
        return TrialResult.failed("crash: the launcher wrote no result", wall_s=wall_s)
    return TrialResult.from_dict({**json.loads(result_path.read_text()), "wall_s": wall_s})


def measured_s(result: TrialResult, tokens_per_step: int) -> float:
    return result.steps * tokens_per_step / result.tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-tiny")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    spec = resolve_model(args.model)
    point = Point(zero_stage=1, micro_batch=4, grad_accum=2)
    tokens_per_step = point.global_batch(args.nproc) * args.seq_len
    work = Path(tempfile.mkdtemp(prefix="autoscale-overhead-"))
    rows: dict[str, list[TrialResult]] = {"deepspeed-launcher": [], "fresh": [], "warm": []}
    with WarmPool(work / "pool") as pool:
        runners = {"deepspeed-launcher": via_deepspeed_launcher, "fresh": run_trial, "warm": pool}
        pool(TrialRequest(spec=spec, point=point, seq_len=args.seq_len, nproc=args.nproc, measure=MEASURE,
                          workdir=work / "warm-up"))  # the pool's own start, paid once per study
        for round_index in range(args.rounds):
            for mode, runner in runners.items():
                request = TrialRequest(spec=spec, point=point, seq_len=args.seq_len, nproc=args.nproc,
                                       measure=MEASURE, workdir=work / f"{mode}-{round_index}", timeout_s=300)
                result = runner(request)
                if not result.ok:
                    print(f"{mode} round {round_index}: {result.reason}", file=sys.stderr)
                    continue
                rows[mode].append(result)
                print(f"round {round_index} {mode:<19} wall {result.wall_s:6.2f} s  tokens/s {result.tokens_per_s:9,.0f}",
                      flush=True)
    launcher_overhead = statistics.median(r.wall_s - measured_s(r, tokens_per_step) for r in rows["deepspeed-launcher"])
    print(f"\n{spec.name}, {point.short()}, {args.nproc} ranks, seq {args.seq_len}, {args.rounds} rounds (medians)")
    print(f"{'mode':<20}{'wall s':>8}{'steps s':>9}{'overhead s':>12}{'vs launcher':>13}{'tokens/s':>11}{'spread':>9}")
    for mode, results in rows.items():
        if not results:
            continue
        overhead = statistics.median(r.wall_s - measured_s(r, tokens_per_step) for r in results)
        tokens = [r.tokens_per_s for r in results]
        spread = (max(tokens) - min(tokens)) / statistics.median(tokens)
        print(f"{mode:<20}{statistics.median(r.wall_s for r in results):8.2f}"
              f"{statistics.median(measured_s(r, tokens_per_step) for r in results):9.2f}{overhead:12.2f}"
              f"{overhead / launcher_overhead:12.2f}x{statistics.median(tokens):11,.0f}{spread:8.0%}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
