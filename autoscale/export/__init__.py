"""`autoscale export`: turn a tuned point into a ready configuration for another training stack.

Targets are a registry: a new one is a module in `autoscale/export/targets/` (a `Target` with its
mapping table) plus one `register(...)` line below.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from autoscale.errors import UserError
from autoscale.export.base import Export, Target, build_export
from autoscale.export.source import ExportSource, load_source
from autoscale.userfiles import writing_to
from autoscale.export.targets import accelerate, deepspeed, hf_trainer, lightning, torchtitan

TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    TARGETS[target.name] = target
    return target


register(deepspeed.TARGET)
register(hf_trainer.TARGET)
register(accelerate.TARGET)
register(lightning.TARGET)
register(torchtitan.TARGET)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise UserError(f"unknown export target {name!r}: choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


def default_out_dir(source_path: Path, target: str) -> Path:
    """Beside the run folder (`runs/<study>/export/<target>`), else `./export/<target>`."""
    source_path = Path(source_path)
    return (source_path if source_path.is_dir() else Path.cwd()) / "export" / target


def export(source_path: Path, target: str, out_dir: Path | None = None, *,
           gpus_per_node: int | None = None) -> tuple[Export, Path]:
    """Read the source, build the target's files and write them; return them and the folder.

    The target is resolved before the source is read, so a bad name fails first and cheaply.
    `gpus_per_node` splits the ranks over nodes (default: the study's hardware entry, else one node).
    """
    chosen = get_target(target)
    source = load_source(Path(source_path))
    if gpus_per_node is not None:
        source = dataclasses.replace(source, gpus_per_node=gpus_per_node)
    folder = Path(out_dir or default_out_dir(source_path, target)).resolve()
    result = build_export(chosen, source, folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {str(folder)!r} is a file: give a folder for the exported files")
    with writing_to(folder):
        folder.mkdir(parents=True, exist_ok=True)
        _remove_earlier_export(folder, keep=set(result.files))
        for name, text in result.files.items():
            (folder / name).write_text(text)
        for script in ("launch.sh", "sbatch.sh"):
            (folder / script).chmod(0o755)
        (folder / MANIFEST).write_text(json.dumps(sorted(result.files)) + "\n")
    return result, folder


MANIFEST = ".autoscale-export.json"  # the files the last export wrote into its folder


def _remove_earlier_export(folder: Path, *, keep: set[str]) -> None:
    """Files an earlier export wrote here that this one does not: stale, they would contradict it.
    Only files the manifest names are removed; anything else in the folder is the user's."""
    manifest = folder / MANIFEST
    try:
        earlier = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return
    for name in earlier:
        if isinstance(name, str) and name not in keep and "/" not in name and (folder / name).is_file():
            (folder / name).unlink()


__all__ = ["TARGETS", "Export", "ExportSource", "Target", "build_export", "default_out_dir", "export",
           "get_target", "load_source", "register"]
