"""The `autoscale` command: thin. Each subcommand lives in `autoscale/commands/<name>.py`, parses
its flags, calls one library function and prints. Errors a user can cause surface as one line and
exit code 2; flag errors from click are folded into the same one-line form.
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.exceptions import TyperException

from autoscale.console import quiet_library_loggers
from autoscale.errors import UserError

COMMANDS = ("tune", "models", "estimate", "calibrate", "report", "export", "bench", "worker")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find the fastest correct DeepSpeed configuration for a model, and keep it fast.")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"autoscale {version('autoscale')}")
        raise typer.Exit(0)


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                            help="Print the installed version and exit.")) -> None:
    """Find the fastest correct DeepSpeed configuration for a model, and keep it fast."""


for _name in COMMANDS:
    importlib.import_module(f"autoscale.commands.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    quiet_library_loggers()
    try:
        code = app(args=argv, standalone_mode=False)  # returns typer.Exit's code in this mode
    except UserError as error:
        print(f"autoscale: error: {error}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("autoscale: aborted", file=sys.stderr)
        return 130
    except TyperException as error:  # typer's click: bad flag, missing argument, bad value
        if type(error).__name__ == "NoArgsIsHelpError":
            print(error.format_message())
            return 0
        print(f"autoscale: error: {error.format_message()}", file=sys.stderr)
        return 2
    except typer.Exit as done:
        return done.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
