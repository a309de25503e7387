"""Security invariants: no shell is ever handed a string (argument lists only), and passwords in
storage URLs never reach logs, summaries or reports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from autoscale.results import RunInfo, summary_dict
from autoscale.provenance import mask_password

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("autoscale", "kernels", "reports", "ci", "benchmarks")
# Calls that always go through /bin/sh, whatever their arguments.
SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
               "asyncio.create_subprocess_shell"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def shell_uses(source: str, filename: str = "<source>") -> list[str]:
    """Each place a shell would parse a string: a shell-only call, its import, or `shell=` not False."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [f"{filename}:{node.lineno}: from {node.module} import {alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in SHELL_CALLS]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in SHELL_CALLS:
            found.append(f"{filename}:{node.lineno}: {name}(...)")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                found.append(f"{filename}:{node.lineno}: {name or 'call'}(..., shell={ast.unparse(keyword.value)})")
    return found


def package_sources() -> list[Path]:
    return sorted(p for folder in SCANNED if (ROOT / folder).is_dir() for p in (ROOT / folder).rglob("*.py"))


def test_the_scan_covers_the_package():
    names = {p.relative_to(ROOT).as_posix() for p in package_sources()}
    assert {"autoscale/engine/launch.py", "autoscale/engine/multinode.py", "autoscale/results.py"} <= names


def test_no_source_builds_a_shell_command():
    found = [use for path in package_sources()
             for use in shell_uses(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize("snippet", [
    "import subprocess\nsubprocess.run('ls ' + d, shell=True)",
    "import subprocess as sp\nsp.Popen(cmd, shell=flag)",
    "import os\nos.system('rm -rf ' + path)",
    "import os\nos.popen(command).read()",
    "from os import system",
    "import subprocess\nsubprocess.getoutput(f'hostname {x}')",
])
def test_the_scanner_catches_each_shell_form(snippet):
    assert len(shell_uses(snippet)) == 1


def test_the_scanner_accepts_argument_lists():
    assert shell_uses("import subprocess\nsubprocess.run(['git', 'rev-parse', 'HEAD'], shell=False)") == []


@pytest.mark.parametrize("url, masked", [
    ("postgresql://tuner:s3cret@db.example.com:5432/studies", "postgresql://tuner:***@db.example.com:5432/studies"),
    ("postgresql://tuner:s3cret@db.example.com/studies", "postgresql://tuner:***@db.example.com/studies"),
    ("postgresql+psycopg2://tuner:p%40ss%2Fw0rd@10.0.0.5:6543/db", "postgresql+psycopg2://tuner:***@10.0.0.5:6543/db"),
    ("postgresql://tuner:p@ss:w/rd#!@db/studies?sslmode=require", "postgresql://tuner:***@db/studies?sslmode=require"),
    ("mysql://root:hunter2@127.0.0.1:3306/optuna", "mysql://root:***@127.0.0.1:3306/optuna"),
    ("mysql+pymysql://root:a b'c\"d@localhost/optuna", "mysql+pymysql://root:***@localhost/optuna"),
    ("mysql+pymysql://root:@localhost/optuna", "mysql+pymysql://root:***@localhost/optuna"),
    ("--storage=postgresql://tuner:s3cret@db/studies", "--storage=postgresql://tuner:***@db/studies"),
    ("connection to postgresql://tuner:s3cret@db:5432/studies failed: refused",
     "connection to postgresql://tuner:***@db:5432/studies failed: refused"),
])
def test_passwords_in_storage_urls_are_masked(url, masked):
    assert mask_password(url) == masked


@pytest.mark.parametrize("url", [
    "postgresql://tuner@db.example.com:5432/studies",  # no password: nothing to hide
    "postgresql://db.example.com:5432/studies",
    "sqlite:////home/me/runs/gpt tiny/study.db",
    None,
])
def test_urls_without_a_password_are_unchanged(url):
    assert mask_password(url) == url


def test_summary_masks_the_storage_url_and_the_command_line():
    info = RunInfo(study_name="s", model={}, backend="cpu", world_size=2, global_batch=8, seq_len=64,
                   hardware={}, device_bytes_per_rank=None, usable_bytes_per_rank=None,
                   command=["autoscale", "tune", "--storage", "postgresql://tuner:s3cret@db/studies"],
                   storage="postgresql://tuner:s3cret@db/studies", started_at="now", versions={}, git_commit=None)
    summary = summary_dict(info, [])
    assert summary["storage"] == summary["command"][-1] == "postgresql://tuner:***@db/studies"
    assert "s3cret" not in repr(summary)
