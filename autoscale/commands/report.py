"""`autoscale report` and `autoscale compare`: write the self-contained HTML report of a run folder,
or of two side by side. The work is `reports.build`; this only parses and prints the path."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autoscale.console import make_console


def report(
    run_dir: Path = typer.Argument(..., help="run folder written by `autoscale tune` (runs/<study>)"),
    out: Optional[Path] = typer.Option(None, help="Where to write the page. Default: RUN_DIR/report.html."),
) -> None:
    """Rebuild the HTML report of a tuning run: best config, figures, every trial, environment."""
    from autoscale.reports.build import build_report

    make_console().print(f"wrote {build_report(run_dir, out)}", highlight=False)


def compare(
    run_a: Path = typer.Argument(..., help="first run folder"),
    run_b: Path = typer.Argument(..., help="second run folder"),
    out: Optional[Path] = typer.Option(None, help="Where to write the page. Default: RUN_A/compare-<RUN_B's name>.html, "
                                       "beside the first study."),
) -> None:
    """Set two tuning runs side by side (two machines, commits or models) in one HTML page."""
    from autoscale.reports.build import compare_reports

    out = out or Path(run_a) / f"compare-{Path(run_b).resolve().name}.html"
    path, caveat = compare_reports(run_a, run_b, out)
    console = make_console()
    if caveat:
        console.print(caveat, highlight=False, markup=False)
    console.print(f"wrote {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("compare")(compare)
