"""Per-trial overhead of three ways to run the same trial, measured side by side in one run.

  deepspeed-launcher: `deepspeed --num_gpus N --module autoscale.engine.rank ...`, a fresh
                      DeepSpeed launcher start per trial (what DeepSpeed's autotuner does)
  fresh:              autoscale's own fresh process group per trial (`--launcher fresh`)
  warm:               autoscale's warm fork servers (`--launcher warm`, the default)

Overhead = a trial's wall time minus the time of its timed steps. Modes are interleaved round by
round so load from other jobs on a shared machine hits them alike. Prints a table (and, with
`--json`, writes its rows); the goal is warm overhead <= 1/4 of the DeepSpeed launcher's, at equal
tokens/s (within noise).

`--study N` measures whole studies instead: `autoscale tune --trials N` with each launcher, beside
one bare DeepSpeed-launcher trial in the same round, and prints where the study's time went, from
its own summary.json (`timing`): the study's phases, and its trials' parts (start, build, gate,
warm-up, timed steps, finish), in total and per trial of the budget, with the per-trial cost over
the bare launch. `--fresh-extensions` gives each study an empty torch extension cache: the first
study on a machine, which builds DeepSpeed's CPU Adam.

    python benchmarks/trial_overhead.py --rounds 5
    python benchmarks/trial_overhead.py --backend cuda --nproc 1 --model gpt-125m --modes warm,fresh --json out.json
    python benchmarks/trial_overhead.py --study 8 --rounds 2 --launchers warm,fresh
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
from autoscale.engine.environment import accelerator_environment
from autoscale.engine.launch import free_port
from autoscale.engine.multinode import default_launcher
from autoscale.engine.outcome import collected
from autoscale.models import resolve_model
from autoscale.point import Point

MODES = ("deepspeed-launcher", "fresh", "warm")
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
    env = {**os.environ, **accelerator_environment(request.backend)}
    started = time.monotonic()
    with open(request.workdir / "launcher.log", "wb") as log:
        subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=request.timeout_s, check=False)
    wall_s = time.monotonic() - started
    if not result_path.exists():
        return TrialResult.failed("crash: the launcher wrote no result", wall_s=wall_s)
    return collected(result_path, wall_s=wall_s)


def tiny_trial(args: argparse.Namespace, workdir: Path) -> TrialRequest:
    """The job every mode runs: ZeRO-1, micro-batch 4 x 2, the table's timed steps."""
    point = Point(zero_stage=1, micro_batch=4, grad_accum=2, precision=args.precision)
    return TrialRequest(spec=resolve_model(args.model), point=point, seq_len=args.seq_len, backend=args.backend,
                        nproc=args.nproc, measure=MEASURE, workdir=workdir, timeout_s=300)


def measured_s(result: TrialResult, tokens_per_step: int) -> float:
    return result.steps * tokens_per_step / result.tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-tiny")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", type=Path, help="also write the table's rows here")
    parser.add_argument("--study", type=int, metavar="TRIALS", help="time whole studies of this many trials")
    parser.add_argument("--launchers", default="warm,fresh", help="--study: the tune launchers to time")
    parser.add_argument("--space", help="--study: the search space (default: tune's)")
    parser.add_argument("--fresh-extensions", action="store_true",
                        help="--study: an empty torch extension cache per study (a machine's first study)")
    args = parser.parse_args()
    if args.study:
        from study_breakdown import study_rounds

        study_rounds(args, bare_launch=lambda workdir: via_deepspeed_launcher(tiny_trial(args, workdir)))
        return
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(MODES)}")
    spec = resolve_model(args.model)
    point = tiny_trial(args, Path(".")).point
    tokens_per_step = point.global_batch(args.nproc) * args.seq_len
    work = Path(tempfile.mkdtemp(prefix="autoscale-overhead-"))
    rows: dict[str, list[TrialResult]] = {mode: [] for mode in MODES if mode in modes}

    def trial(workdir: Path) -> TrialRequest:
        return tiny_trial(args, workdir)

    with WarmPool(work / "pool") as pool:
        runners = {"deepspeed-launcher": via_deepspeed_launcher, "fresh": run_trial, "warm": pool}
        if "warm" in rows:
            pool(trial(work / "warm-up"))  # the pool's own start, paid once per study
        for round_index in range(args.rounds):
            for mode in rows:
                runner = runners[mode]
                request = trial(work / f"{mode}-{round_index}")
                result = runner(request)
                if not result.ok:
                    print(f"{mode} round {round_index}: {result.reason}", file=sys.stderr)
                    continue
                rows[mode].append(result)
                print(f"round {round_index} {mode:<19} wall {result.wall_s:6.2f} s  tokens/s {result.tokens_per_s:9,.0f}",
                      flush=True)
            if args.json:  # after every round: a run stopped at its time limit keeps what it measured
                args.json.write_text(json.dumps({"model": spec.name, "point": point.as_dict(), "backend": args.backend,
                                                 "nproc": args.nproc, "seq_len": args.seq_len,
                                                 "rounds": round_index + 1,
                                                 "rows": summarise(rows, tokens_per_step)}, indent=1) + "\n")
    table = summarise(rows, tokens_per_step)
    print(f"\n{spec.name}, {point.short()}, {args.nproc} {args.backend} ranks, seq {args.seq_len}, "
          f"{args.rounds} rounds (medians)")
    print(f"{'mode':<20}{'wall s':>8}{'steps s':>9}{'overhead s':>12}{'vs launcher':>13}{'tokens/s':>11}{'spread':>9}")
    for row in table:
        ratio = f"{row['overhead_vs_launcher']:12.2f}x" if row["overhead_vs_launcher"] is not None else f"{'-':>13}"
        print(f"{row['mode']:<20}{row['wall_s']:8.2f}{row['steps_s']:9.2f}{row['overhead_s']:12.2f}"
              f"{ratio}{row['tokens_per_s']:11,.0f}{row['tokens_per_s_spread']:8.0%}")
    shutil.rmtree(work, ignore_errors=True)


def summarise(rows: dict[str, list[TrialResult]], tokens_per_step: int) -> list[dict]:
    """Medians per mode over the rounds that succeeded; spread = (max - min) / median tokens/s."""
    def overhead(results: list[TrialResult]) -> float:
        return statistics.median(r.wall_s - measured_s(r, tokens_per_step) for r in results)

    launcher = rows.get("deepspeed-launcher")
    launcher_overhead = overhead(launcher) if launcher else None
    table = []
    for mode, results in rows.items():
        if not results:
            continue
        tokens = [r.tokens_per_s for r in results]
        table.append({"mode": mode, "trials": len(results), "wall_s": statistics.median(r.wall_s for r in results),
                      "steps_s": statistics.median(measured_s(r, tokens_per_step) for r in results),
                      "overhead_s": overhead(results),
                      "overhead_vs_launcher": overhead(results) / launcher_overhead if launcher_overhead else None,
                      "tokens_per_s": statistics.median(tokens),
                      "tokens_per_s_spread": (max(tokens) - min(tokens)) / statistics.median(tokens)})
    return table


if __name__ == "__main__":
    main()
