"""`autoscale calibrate runs/<study>`: fit the cost model's parameters to the study's trials."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autoscale.console import make_console


def calibrate(
    run_dir: Path = typer.Argument(..., help="A run folder (runs/<study>) with trials.csv and summary.json."),
    out: Optional[Path] = typer.Option(None, help="Write the fitted parameters here instead of the calibration "
                                       "folder, where later predictions on this hardware find them."),
) -> None:
    """Fit the efficiency parameters to the measured trials; later predictions on this hardware use them."""
    from autoscale.costmodel.calibrate import calibrate_run

    fit, path = calibrate_run(run_dir, output=out)
    console = make_console()
    console.print(f"fitted {', '.join(fit.fitted)}")
    console.print(f"median |error| throughput {fit.throughput_error_before:.1%} -> {fit.throughput_error_after:.1%}, "
                  f"peak memory {fit.memory_error_before:.1%} -> {fit.memory_error_after:.1%}")
    console.print(f"saved {path}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
