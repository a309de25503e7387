"""What an export starts from: a run folder's best point, or a bare ds_config file.

A run folder gives the Point (summary.json's best), world size, sequence length and model name, and
the ds_config autoscale checked. A bare ds_config gives only what DeepSpeed's keys carry, so the
Point is recovered from them; knobs a ds_config cannot hold (checkpointing, kernels, tp) take the
Point's defaults, which is what that config ran with if autoscale did not write it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from autoscale.ds_config import DS_CONFIG_KNOBS, from_ds_config, to_ds_config
from autoscale.errors import UserError
from autoscale.export.launch import Cluster
from autoscale.userfiles import read_user_json
from autoscale.point import Point

@dataclass(frozen=True, kw_only=True)
class ExportSource:
    point: Point
    world_size: int
    ds_config: dict
    path: Path
    seq_len: int | None = None
    model_name: str | None = None
    study_name: str | None = None
    gpus_per_node: int | None = None  # None: one node holds every rank (a measured run, a bare ds_config)
    predicted: bool = False  # summary.json's `predicted`: every figure is the cost model's, nothing ran
    git_commit: str | None = None  # autoscale's commit when the study was made
    on_cpu: bool = False  # the study ran on CPU ranks (backend cpu): the target must be told so

    @property
    def cluster(self) -> Cluster:
        return Cluster.for_world(self.world_size, self.gpus_per_node or self.world_size)

    @property
    def data_parallel(self) -> int:
        return self.point.data_parallel(self.world_size)

    @property
    def global_batch(self) -> int:
        return self.point.global_batch(self.world_size)

    @property
    def provenance(self) -> str:
        """PREDICTED or measured, by which study and commit: the word every exported file carries."""
        if self.study_name is None:
            return f"from the ds_config {self.path.name} (not an autoscale study: neither measured nor predicted by it)"
        how = "PREDICTED by the cost model, not measured" if self.predicted else "measured"
        return f"{how}, study {self.study_name!r}, autoscale commit {self.git_commit or 'unknown'}"

    def describe(self) -> str:
        """One line saying where the settings come from, for the exported files' headers."""
        tuned = f", model {self.model_name}" if self.model_name else ""
        tuned += f", seq_len {self.seq_len}" if self.seq_len else ""
        return f"{self.point.describe()} on {self.world_size} ranks{tuned}; {self.provenance}"


def _read_json(path: Path) -> dict:
    value = read_user_json(path, str(path), missing=f"{path} not found")
    if not isinstance(value, dict):
        raise UserError(f"{path} must hold a JSON object")
    return value


def load_source(path: Path) -> ExportSource:
    """A run folder (summary.json + ds_config.json) or a ds_config JSON file."""
    path = Path(path)
    if path.is_dir():
        return _from_run_folder(path)
    if not path.exists():
        raise UserError(f"{path} not found: give a run folder (runs/<study>) or a ds_config.json")
    config = _read_json(path)
    point, world_size = from_ds_config(config, origin=str(path))
    if world_size is None:
        raise UserError(f"{path}: needs train_batch_size to recover the world size")
    return ExportSource(point=point, world_size=world_size, ds_config=config, path=path)


def _from_run_folder(folder: Path) -> ExportSource:
    summary = _read_json(folder / "summary.json")
    if not (folder / "ds_config.json").exists() and (summary.get("evaluated") or {}).get("layout_target"):
        return _from_plan_without_ds_config(folder, summary)
    config = _read_json(folder / "ds_config.json")
    best = summary.get("best")
    if not best:
        raise UserError(f"{folder}: summary.json has no best point (no trial finished); nothing to export")
    if not isinstance(summary.get("world_size"), int) or "point" not in best:
        raise UserError(f"{folder}: summary.json lacks world_size or best.point (see docs/run-folder.md)")
    point = Point.from_dict(best["point"])
    world_size = summary["world_size"]
    model_knobs = {k: v for k, v in point.as_dict().items() if k not in DS_CONFIG_KNOBS}
    recovered, config_world = from_ds_config(config, model_knobs=model_knobs, origin=f"{folder}/ds_config.json")
    for knob in DS_CONFIG_KNOBS:
        if getattr(recovered, knob) != getattr(point, knob):
            raise UserError(f"{folder}: ds_config.json and summary.json disagree on {knob} "
                            f"({getattr(recovered, knob)!r} vs {getattr(point, knob)!r})")
    if config_world is not None and config_world != world_size:
        raise UserError(f"{folder}: ds_config.json implies {config_world} ranks, summary.json says {world_size}")
    return ExportSource(point=point, world_size=world_size, ds_config=config, path=folder,
                        seq_len=summary.get("seq_len"), model_name=(summary.get("model") or {}).get("name"),
                        **_provenance(summary))


def _provenance(summary: dict) -> dict:
    """What an exported file says of where its numbers come from, read from the study's summary.json."""
    return dict(study_name=summary.get("study_name"), predicted=bool(summary.get("predicted")),
                gpus_per_node=(summary.get("hardware") or {}).get("gpus_per_node"),
                git_commit=summary.get("git_commit"), on_cpu=summary.get("backend") == "cpu")


def _from_plan_without_ds_config(folder: Path, summary: dict) -> ExportSource:
    """A plan for another engine (`tune --backend model --target`) whose best point a ds_config cannot
    carry wrote none. The settings a ds_config holds beside those knobs (gradient clipping) are the
    ones autoscale writes for every point, so they come from `to_ds_config` of the point without them;
    a target that reads the knobs a ds_config cannot carry refuses them by its own table."""
    best = summary.get("best")
    if not best or "point" not in best or not isinstance(summary.get("world_size"), int):
        raise UserError(f"{folder}: summary.json has no best point or world_size; nothing to export")
    point, world_size = Point.from_dict(best["point"]), summary["world_size"]
    plain = replace(point, precision="bf16" if point.precision == "fp8" else point.precision,
                    megatron_sp=False, cp=1, vpp=1)
    return ExportSource(point=point, world_size=world_size, ds_config=to_ds_config(plain, world_size=world_size),
                        path=folder, seq_len=summary.get("seq_len"),
                        model_name=(summary.get("model") or {}).get("name"), **_provenance(summary))
