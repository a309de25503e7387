"""Reading files users hand us (spaces, suites, hardware, HF configs, hostfiles): every way that
fails is one UserError naming the file, never a traceback."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from autoscale.errors import UserError


def read_user_text(path: Path, what: str, *, missing: str | None = None) -> str:
    """The text of `path`; `what` names it in messages ("search space 'x.yaml'"), `missing`
    replaces the message for a file that does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UserError(missing or f"{what} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} is a directory, not a file") from None
    except OSError as error:
        raise UserError(f"cannot read {what}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} is not a text file") from None


def read_user_yaml(path: Path, what: str, *, missing: str | None = None) -> Any:
    text = read_user_text(path, what, missing=missing)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{what} is not valid YAML: {str(error).splitlines()[0]}") from None


def read_user_json(path: Path, what: str, *, missing: str | None = None) -> Any:
    text = read_user_text(path, what, missing=missing)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{what} is not valid JSON: {error}") from None


@contextmanager
def writing_to(path: Path, flag: str = "--out"):
    """Writing `path` (a file, or a folder and its files) inside this context fails as one UserError
    naming the flag: an unwritable folder, a file in the way, a full disk."""
    try:
        yield Path(path)
    except OSError as error:
        raise UserError(f"cannot write to {flag} {str(path)!r}: {error.strerror or error}") from None
