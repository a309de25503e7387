"""What an export starts from: a run folder's best point, or a bare ds_config file.

A run folder gives the Point (summary.json's best), world size, sequence length and model name, and
the ds_config autoscale checked. A bare ds_config gives only what DeepSpeed's keys carry, so the
Point is recovered from them; knobs a ds_config cannot hold (checkpointing, kernels, tp) take the
Point's defaults, which is what that config ran with if autoscale did not write it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autoscale.errors import UserError
from autoscale.userfiles import read_user_json
from autoscale.point import Point

# the knobs a ds_config carries, compared when a run folder holds both files
DS_CONFIG_KNOBS = ("zero_stage", "micro_batch", "grad_accum", "precision", "offload", "pp")


@dataclass(frozen=True, kw_only=True)
class ExportSource:
    point: Point
    world_size: int
    ds_config: dict
    path: Path
    seq_len: int | None = None
    model_name: str | None = None
    study_name: str | None = None

    @property
    def data_parallel(self) -> int:
        return self.point.data_parallel(self.world_size)

    @property
    def global_batch(self) -> int:
        return self.point.global_batch(self.world_size)

    def describe(self) -> str:
        """One line saying where the settings come from, for the exported files' headers."""
        where = f"study {self.study_name!r}" if self.study_name else str(self.path)
        tuned = f", model {self.model_name}" if self.model_name else ""
        tuned += f", seq_len {self.seq_len}" if self.seq_len else ""
        return f"{where}: {self.point.describe()} on {self.world_size} ranks{tuned}"


def _read_json(path: Path) -> dict:
    value = read_user_json(path, str(path), missing=f"{path} not found")
    if not isinstance(value, dict):
        raise UserError(f"{path} must hold a JSON object")
    return value


def _concrete(config: dict, key: str, default=None):
    value = config.get(key, default)
    if value == "auto":
        raise UserError(f"ds_config {key} is \"auto\": export needs the concrete values autoscale tuned")
    return value


def _enabled(config: dict, *names: str) -> bool:
    for name in names:
        section = config.get(name)
        if isinstance(section, dict):
            if section.get("enabled") == "auto":
                raise UserError(f"ds_config {name}.enabled is \"auto\": export needs a concrete precision")
            if section.get("enabled"):
                return True
    return False


def point_from_ds_config(config: dict) -> tuple[Point, int]:
    """The Point and world size a ds_config describes.

    World size is train_batch_size / (micro x accumulation) data-parallel ranks times pipeline
    stages. Settings outside the Point's knobs (parameter offload, NVMe) are refused rather than
    dropped, because targets rebuilt from the Point would lose them.
    """
    zero = config.get("zero_optimization") or {}
    stage = _concrete(zero, "stage", 0)
    micro = _concrete(config, "train_micro_batch_size_per_gpu")
    accum = _concrete(config, "gradient_accumulation_steps", 1)
    total = _concrete(config, "train_batch_size")
    if micro is None or total is None:
        raise UserError("ds_config needs train_micro_batch_size_per_gpu and train_batch_size "
                        "to recover the micro-batch and the world size")
    if total % (micro * accum):
        raise UserError(f"ds_config train_batch_size {total} is not a multiple of micro-batch {micro} "
                        f"x accumulation {accum}")
    offload_device = (zero.get("offload_optimizer") or {}).get("device", "none")
    if offload_device not in ("none", "cpu"):
        raise UserError(f"ds_config zero_optimization.offload_optimizer.device {offload_device!r}: "
                        "autoscale's offload knob is none or cpu")
    if (zero.get("offload_param") or {}).get("device", "none") != "none":
        raise UserError("ds_config zero_optimization.offload_param is not an autoscale knob; "
                        "export would drop it, so it refuses")
    precision = "bf16" if _enabled(config, "bf16", "bfloat16") else "fp16" if _enabled(config, "fp16") else "fp32"
    stages = (config.get("pipeline") or {}).get("stages", 1)
    point = Point(zero_stage=stage, micro_batch=micro, grad_accum=accum, precision=precision,
                  offload=offload_device, pp=stages)
    return point, total // (micro * accum) * stages


def load_source(path: Path) -> ExportSource:
    """A run folder (summary.json + ds_config.json) or a ds_config JSON file."""
    path = Path(path)
    if path.is_dir():
        return _from_run_folder(path)
    if not path.exists():
        raise UserError(f"{path} not found: give a run folder (runs/<study>) or a ds_config.json")
    config = _read_json(path)
    point, world_size = point_from_ds_config(config)
    return ExportSource(point=point, world_size=world_size, ds_config=config, path=path)


def _from_run_folder(folder: Path) -> ExportSource:
    summary = _read_json(folder / "summary.json")
    config = _read_json(folder / "ds_config.json")
    best = summary.get("best")
    if not best:
        raise UserError(f"{folder}: summary.json has no best point (no trial finished); nothing to export")
    if not isinstance(summary.get("world_size"), int) or "point" not in best:
        raise UserError(f"{folder}: summary.json lacks world_size or best.point (see docs/run-folder.md)")
    point = Point.from_dict(best["point"])
    world_size = summary["world_size"]
    recovered, config_world = point_from_ds_config(config)
    for knob in DS_CONFIG_KNOBS:
        if getattr(recovered, knob) != getattr(point, knob):
            raise UserError(f"{folder}: ds_config.json and summary.json disagree on {knob} "
                            f"({getattr(recovered, knob)!r} vs {getattr(point, knob)!r})")
    if config_world * point.tp != world_size:  # a ds_config knows data-parallel ranks x pipeline stages
        raise UserError(f"{folder}: ds_config.json implies {config_world * point.tp} ranks, "
                        f"summary.json says {world_size}")
    return ExportSource(point=point, world_size=world_size, ds_config=config, path=folder,
                        seq_len=summary.get("seq_len"), model_name=(summary.get("model") or {}).get("name"),
                        study_name=summary.get("study_name"))
