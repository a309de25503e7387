"""`autoscale report` and `autoscale compare`: write the self-contained HTML report of a run folder,
or of two side by side. The work is `reports.build`; this only parses and prints the path."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    run_dir: Path = typer.Argument(..., help="run folder written by `autoscale tune` (runs/<study>)"),
    out: Path = typer.Option(None, "--out", help="where to write the page (default: RUN_DIR/report.html)"),
) -> None:
    """Rebuild the HTML report of a tuning run: best config, figures, every trial, environment."""
    from reports.build import build_report

    print(build_report(run_dir, out))


def compare(
    run_a: Path = typer.Argument(..., help="first run folder"),
    run_b: Path = typer.Argument(..., help="second run folder"),
    out: Path = typer.Option(..., "--out", help="where to write the comparison page"),
) -> None:
    """Set two tuning runs side by side (two machines, commits or models) in one HTML page."""
    from reports.build import compare_reports

    print(compare_reports(run_a, run_b, out))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("compare")(compare)
