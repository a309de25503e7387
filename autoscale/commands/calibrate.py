"""`autoscale calibrate runs/<study>`: fit the cost model's parameters to the study's trials, into the
study folder; `--apply HARDWARE` makes later predictions use them, `--reset` undoes that."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autoscale.console import make_console
from autoscale.errors import UserError


def calibrate(
    run_dir: Optional[Path] = typer.Argument(None, help="A run folder (runs/<study>) with trials.csv and summary.json."),
    out: Optional[Path] = typer.Option(None, help="Write the fitted parameters here instead of "
                                       "RUN_DIR/calibration.yaml (used by nothing until applied)."),
    apply: Optional[str] = typer.Option(None, "--apply", metavar="HARDWARE",
                                        help="Also make later predictions for this hardware (the study's) use the "
                                             "fit: estimate and plans say so; undo with --reset."),
    reset: bool = typer.Option(False, "--reset", help="Remove the applied calibrations (of --apply's hardware "
                                                      "only, when given) and return to the default parameters."),
) -> None:
    """Fit the efficiency parameters to the measured trials and report their cross-validated error."""
    from autoscale.costmodel.calibrate import calibrate_run
    from autoscale.costmodel.params import reset_calibrations

    console = make_console()
    if reset:
        if run_dir is not None:
            raise UserError("--reset takes no run folder: it removes applied calibrations (--apply HARDWARE for one)")
        removed = reset_calibrations(apply.lower() if apply else None)
        for path in removed:
            console.print(f"removed {path}", highlight=False)
        console.print("predictions use the default parameters" if removed else "no calibration was applied",
                      highlight=False)
        return
    if run_dir is None:
        raise UserError("give a run folder to calibrate on (runs/<study>), or --reset")
    fit, path = calibrate_run(run_dir, output=out, apply=apply)
    console.print(f"fitted {', '.join(fit.fitted)} to {fit.observations} trials (throughput and memory apart, "
                  f"each with at most {fit.observations - 1} free parameters)", highlight=False)
    console.print(f"median |error|, each trial predicted by a fit to the others (leave-one-out): throughput "
                  f"{fit.throughput_error_before:.1%} -> {fit.throughput_error_after:.1%}, peak memory "
                  f"{fit.memory_error_before:.1%} -> {fit.memory_error_after:.1%}", highlight=False)
    console.print(f"saved {path}" + ("; later predictions for this hardware use it (undo: autoscale calibrate "
                                     "--reset)" if apply else f"; to use it: autoscale calibrate {run_dir} --apply "
                                     "HARDWARE"), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
