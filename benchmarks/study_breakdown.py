"""Where a whole study's time goes, for `trial_overhead.py --study`: each round runs one bare
DeepSpeed-launcher trial of a tiny job, then `autoscale tune` with each launcher, and reads the
split from the study's own summary.json (`timing`, written by `autoscale.timing`).

Rows: `process` is the CLI's own start and exit (the command's wall time less the study's clock);
then the study's phases; then, below the line, the parts of every trial the study ran (the
reference, the budget's trials and the confirmation rounds), which together make up those phases'
trial time. Per trial = over the study's trial budget. Figures are medians over the rounds; the
host's 1-minute load average before and after each study is printed with them, because a shared
machine's load moves every figure here.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from autoscale.engine.request import TrialResult
from autoscale.timing import STUDY_PHASES, TRIAL_PARTS


def run_study(args, launcher: str, out: Path) -> dict:
    """One `autoscale tune` study in a subprocess; its wall time, summary timing and load."""
    command = [sys.executable, "-c", "from autoscale.cli import main; main()", "tune", "--model", args.model,
               "--trials", str(args.study), "--nproc", str(args.nproc), "--backend", args.backend,
               "--launcher", launcher, "--out", str(out)]
    if args.space:
        command += ["--space", args.space]
    env = dict(os.environ)
    if args.fresh_extensions:
        env["TORCH_EXTENSIONS_DIR"] = str(out.parent / f"{out.name}-torch-extensions")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    wall_s = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"{launcher} study failed ({completed.returncode}): {completed.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"launcher": launcher, "wall_s": wall_s, "timing": summary["timing"], "load_before": load_before,
            "load_after": os.getloadavg()[0], "confirmed": summary["best"].get("confirmation") is not None}


def breakdown(study: dict) -> dict[str, float]:
    """Seconds by row: the process's own, the study's phases, then the trials' parts summed over every trial."""
    timing = study["timing"]
    rows = {"process": max(0.0, study["wall_s"] - timing["total_s"])}
    rows.update({phase: timing["phases_s"].get(phase, 0.0) for phase in (*STUDY_PHASES, "other")})
    for part in TRIAL_PARTS:
        rows[f"  trial {part.removesuffix('_s')}"] = sum(entry[part] for entry in timing["trials"].values())
    rows["  trials run"] = sum(entry["count"] for entry in timing["trials"].values())
    return rows


def study_rounds(args, *, bare_launch: Callable[[Path], TrialResult]) -> None:
    launchers = args.launchers.split(",")
    work = Path(tempfile.mkdtemp(prefix="autoscale-study-overhead-"))
    bare: list[float] = []
    studies: dict[str, list[dict]] = {launcher: [] for launcher in launchers}
    for round_index in range(args.rounds):
        result = bare_launch(work / f"bare-{round_index}")
        if result.ok:
            bare.append(result.wall_s)
        print(f"round {round_index} bare deepspeed launch {result.wall_s:6.2f} s  load {os.getloadavg()[0]:.2f}",
              flush=True)
        for launcher in launchers:
            study = run_study(args, launcher, work / f"{launcher}-{round_index}")
            studies[launcher].append(study)
            print(f"round {round_index} {launcher:<6} study {study['wall_s']:6.1f} s "
                  f"({study['wall_s'] / args.study:.2f} s per trial)  load {study['load_before']:.2f} -> "
                  f"{study['load_after']:.2f}  confirmed: {study['confirmed']}", flush=True)
            if args.json:  # after every study: a run stopped early keeps what it measured
                args.json.write_text(json.dumps({"trials": args.study, "bare_launch_s": bare, "studies": studies},
                                                indent=1) + "\n")
    print_table(studies, bare, trials=args.study)
    shutil.rmtree(work, ignore_errors=True)


def print_table(studies: dict[str, list[dict]], bare: list[float], *, trials: int) -> None:
    bare_s = statistics.median(bare) if bare else None
    launchers = [launcher for launcher, runs in studies.items() if runs]
    rows = {launcher: [breakdown(study) for study in studies[launcher]] for launcher in launchers}
    rounds = ", ".join(f"{launcher} {len(rows[launcher])}" for launcher in launchers)
    bare_line = f"; bare DeepSpeed launch {bare_s:.2f} s, spread {spread(bare):.0%}" if bare_s else ""
    print(f"\nwhere a {trials}-trial study's time goes (medians over studies: {rounds}{bare_line})")
    header = f"{'':<22}" + "".join(f"{launcher + ' s':>12}{'per trial':>11}" for launcher in launchers)
    print(header)
    for name in rows[launchers[0]][0]:
        cells = []
        for launcher in launchers:
            value = statistics.median(r[name] for r in rows[launcher])
            per_trial = f"{value / trials:11.2f}" if name != "  trials run" else f"{'':>11}"
            cells.append(f"{value:12.2f}{per_trial}")
        print(f"{name:<22}" + "".join(cells))
    for launcher in launchers:
        walls = [s["wall_s"] for s in studies[launcher]]
        per_trial = statistics.median(walls) / trials
        ratio = f", {per_trial / bare_s:.2f}x a bare launch" if bare_s else ""
        loads = [s["load_before"] for s in studies[launcher]] + [s["load_after"] for s in studies[launcher]]
        print(f"{launcher}: study {statistics.median(walls):.1f} s (spread {spread(walls):.0%}), "
              f"{per_trial:.2f} s per trial{ratio}; load average {min(loads):.2f}-{max(loads):.2f}")


def spread(values: list[float]) -> float:
    """(max - min) / median."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


if __name__ == "__main__":  # the table again from a --json file: python benchmarks/study_breakdown.py FILE
    stored = json.loads(Path(sys.argv[1]).read_text())
    print_table(stored["studies"], stored["bare_launch_s"], trials=stored["trials"])
