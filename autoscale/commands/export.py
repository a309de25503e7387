"""`autoscale export`: write a tuned configuration for another trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autoscale.console import make_console


def export(
    source: Path = typer.Argument(..., help="run folder (runs/<study>) or a ds_config.json"),
    to: str = typer.Option(..., "--to", help="deepspeed, hf-trainer, accelerate, lightning or torchtitan"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the files (default SOURCE/export/TARGET "
                                                           "or ./export/TARGET)"),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", min=1,
                                                help="ranks per node in the launch files (default: the study's "
                                                     "hardware entry, else one node of every rank)"),
) -> None:
    """Write the best configuration as ready files for another training stack, and its launch command."""
    from autoscale.export import export as run_export

    result, folder = run_export(source, to, out, gpus_per_node=gpus_per_node)
    console = make_console()
    for name in result.files:
        console.print(f"wrote {folder / name}", highlight=False)
    for note in result.notes:
        console.print(f"to do: {note}", highlight=False, markup=False)
    console.print(f"launch: {result.command_line}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
