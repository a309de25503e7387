"""`autoscale worker`: join a study from any machine that reaches its storage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def worker(
    storage: str = typer.Option(..., help="The study's storage URL, e.g. postgresql://user:pass@host/db."),
    study_name: str = typer.Option(..., help="The study to join (started by `autoscale tune --storage ...`)."),
    out: Optional[Path] = typer.Option(None, help="Folder for this worker's trial logs and files. "
                                       "Default: runs/<study-name>/worker-<host>-<pid>."),
) -> None:
    """Measure trials of a shared study until its trial budget is spent; run several at once."""
    from autoscale.commands.tune import console, run_session
    from autoscale.session import TuneSession

    session = TuneSession.for_worker(storage=storage, study_name=study_name, out=out, command=sys.argv)
    run_session(session, console)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
