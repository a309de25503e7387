"""Where and when a result was measured, and what may be shown of how: timestamps, package versions,
the git commit, and storage URLs with their passwords masked. Every record autoscale writes
(summary.json, bench records, replay tables) takes these from here.
"""

from __future__ import annotations

import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_USER_AND_PASSWORD = re.compile(r"(?P<head>[\w+.-]*://[^:/@\s]*:)(?P<password>.*)@(?P<host>[^@]*)$", re.DOTALL)


def mask_password(url: str | None) -> str | None:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db

    The password runs to the *last* `@`: one typed unescaped (`p@ss`) is hidden whole, even though
    SQLAlchemy would split it there. Masking too much is harmless; too little leaks the secret.
    A URL inside other text (`--storage=postgresql://...`, an error message) is masked the same way.
    """
    if url is None:
        return None
    return _USER_AND_PASSWORD.sub(r"\g<head>***@\g<host>", url)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("autoscale", "torch", "deepspeed", "optuna", "triton"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def git_commit(directory: Path = Path(__file__).resolve().parent) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
