"""A bench suite: fixed configs to time on every run, read from YAML and validated at this edge.

The YAML is checked by pydantic (unknown keys refused) and turned into frozen dataclasses holding a
resolved `ModelSpec`, a `Point` and a `MeasurePolicy`, so the runner never sees a dict of strings.
A config gives its knobs as `point:` or a DeepSpeed `ds_config:` file (relative to the suite); the
engine still needs the point for the data and the model build, so with a file the point is read
from it. See docs/bench.md for the format.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from autoscale.bench.defaults import DEFAULT_THRESHOLD
from autoscale.bench.metrics import KERNEL_METRICS, TRIAL_METRICS
from autoscale.ds_config import from_ds_config
from autoscale.engine import MeasurePolicy
from autoscale.errors import UserError
from autoscale.userfiles import read_user_yaml
from autoscale.models.presets import resolve_model
from autoscale.models.spec import ModelSpec
from autoscale.point import FIELD_TYPES, Point

CASE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # also a folder name and a JUnit class name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_PointFile = create_model("_PointFile", __base__=_Strict,
                          **{name: (Optional[kind], None) for name, kind in FIELD_TYPES.items()})
"""A config's `point:`: any field of `Point`; the values are checked by `Point` itself."""


class _MeasureFile(_Strict):
    warmup_steps: int = Field(2, ge=0)
    min_steps: int = Field(3, ge=1)
    max_steps: int = Field(20, ge=1)
    target_rse: float = Field(0.02, ge=0)
    max_measure_s: float = Field(60.0, gt=0)


def _check_thresholds(values: dict[str, float], known: dict) -> dict[str, float]:
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"unknown metric {name!r}; metrics are {', '.join(known)}")
        if not 0 < value < 10:
            raise ValueError(f"threshold of {name} must be a fraction such as 0.05, got {value}")
    return values


class _ConfigFile(_Strict):
    name: str = Field(pattern=CASE_NAME)
    model: str
    seq_len: int = Field(gt=0)
    nproc: int | None = Field(None, gt=0)
    point: _PointFile | None = None
    ds_config: str | None = None
    steps: int | None = Field(None, ge=1)
    warmup_steps: int | None = Field(None, ge=0)
    measure: _MeasureFile | None = None
    repeats: int = Field(5, ge=2)
    rounds: int = Field(8, ge=2)
    max_rounds: int | None = Field(None, ge=2)
    budget_s: float = Field(240.0, gt=0)
    turns: int = Field(30, ge=1)
    retries: int = Field(1, ge=0, le=5)
    timeout_s: float = Field(600.0, gt=0)
    thresholds: dict[str, float] = {}

    @model_validator(mode="after")
    def _rounds_until_sure(self):
        if self.max_rounds is not None and self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be at least rounds ({self.rounds})")
        return self

    @field_validator("thresholds")
    @classmethod
    def _known_metrics(cls, values: dict[str, float]) -> dict[str, float]:
        return _check_thresholds(values, TRIAL_METRICS)

    @model_validator(mode="after")
    def _one_way_to_measure(self) -> "_ConfigFile":
        if self.measure is not None and (self.steps is not None or self.warmup_steps is not None):
            raise ValueError("give either steps/warmup_steps or measure, not both")
        if self.steps is None and self.measure is None:
            raise ValueError("give steps (a fixed number of timed steps) or a measure policy")
        return self


class _KernelsFile(_Strict):
    json_file: str | None = Field(None, alias="json")
    command: str | None = None
    timeout_s: float = Field(1800.0, gt=0)
    threshold: float | None = Field(None, gt=0, lt=10)
    rounds: int = Field(6, ge=2)  # A/B mode: paired rounds, each one run of the command per side

    @model_validator(mode="after")
    def _one_source(self) -> "_KernelsFile":
        if (self.json_file is None) == (self.command is None):
            raise ValueError("kernels needs exactly one of json (a pytest-benchmark file) or command")
        return self


class _SuiteFile(_Strict):
    name: str = Field(pattern=CASE_NAME)
    description: str = ""
    backend: Literal["auto", "cpu", "cuda"] = "auto"
    thresholds: dict[str, float] = {}
    alpha: float = Field(0.05, gt=0, lt=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    resamples: int = Field(2000, ge=100)
    configs: list[_ConfigFile] = []
    kernels: _KernelsFile | None = None

    @field_validator("thresholds")
    @classmethod
    def _known_metrics(cls, values: dict[str, float]) -> dict[str, float]:
        return _check_thresholds(values, TRIAL_METRICS | KERNEL_METRICS)

    @model_validator(mode="after")
    def _something_to_run(self) -> "_SuiteFile":
        if not self.configs and self.kernels is None:
            raise ValueError("a suite needs configs, kernels or both")
        names = [c.name for c in self.configs]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"config names must be unique: {', '.join(duplicated)}")
        return self


@dataclass(frozen=True, kw_only=True)
class BenchCase:
    """One fixed config: run `repeats` times (or `rounds` times per side in A/B mode), each a fresh trial."""

    name: str
    spec: ModelSpec
    point: Point
    ds_config: dict | None
    seq_len: int
    nproc: int | None  # None: the backend's default (2 CPU ranks, all GPUs)
    measure: MeasurePolicy
    repeats: int
    retries: int
    timeout_s: float
    rounds: int = 8  # A/B mode (--against): paired rounds, each one launch of either side; the fewest
    max_rounds: int = 24  # A/B mode: rounds are added while a verdict is undecided (bench.paired.decided),
    budget_s: float = 240.0  # up to `max_rounds` or until this much wall time has passed, whichever is first
    turns: int = 30  # A/B mode: timed steps per side per round, the sides taking turns step by step
    thresholds: dict[str, float] = field(default_factory=dict)

    def definition(self) -> dict:
        """What was measured, stored with the samples so a baseline shows when a config changed."""
        return {"model": self.spec.name, "seq_len": self.seq_len, "nproc": self.nproc,
                "point": self.point.as_dict(), "ds_config": self.ds_config, "repeats": self.repeats,
                "measure": asdict(self.measure)}


@dataclass(frozen=True, kw_only=True)
class KernelSource:
    """pytest-benchmark timings: a JSON file, or a pytest command that writes one."""

    json_path: Path | None
    command: str | None
    timeout_s: float
    threshold: float | None
    rounds: int = 6  # A/B mode (--against): paired rounds, each one run of the command per side


@dataclass(frozen=True, kw_only=True)
class Suite:
    name: str
    description: str
    path: Path
    backend: str
    thresholds: dict[str, float]
    alpha: float
    confidence: float
    resamples: int
    cases: tuple[BenchCase, ...]
    kernels: KernelSource | None

    def threshold(self, case: str, metric: str, default: float = DEFAULT_THRESHOLD) -> float:
        """The config's own threshold for a metric, else the suite's, else `default` (--threshold)."""
        for found in self.cases:
            if found.name == case and metric in found.thresholds:
                return found.thresholds[metric]
        if metric in KERNEL_METRICS and self.kernels and self.kernels.threshold is not None:
            return self.kernels.threshold
        return self.thresholds.get(metric, default)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "top level"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _case(raw: _ConfigFile, suite_dir: Path, suite_path: Path) -> BenchCase:
    origin = f"suite {str(suite_path)!r}, config {raw.name!r}"
    spec = resolve_model(raw.model)
    if raw.seq_len > spec.max_seq_len:
        raise UserError(f"{origin}: seq_len {raw.seq_len} is longer than {spec.name}'s {spec.max_seq_len}")
    ds_config = None
    if raw.ds_config is not None:
        ds_path = suite_dir / raw.ds_config
        try:
            ds_config = json.loads(ds_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{origin}: ds_config file {str(ds_path)!r} does not exist") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{origin}: ds_config file {str(ds_path)!r} is not JSON ({error})") from None
        given = {k: v for k, v in (raw.point.model_dump() if raw.point else {}).items() if v is not None}
        point, _ = from_ds_config(ds_config, model_knobs=given, origin=origin)
    else:
        knobs = {k: v for k, v in (raw.point.model_dump() if raw.point else {}).items() if v is not None}
        point = Point(**knobs)
    if raw.measure is not None:
        measure = MeasurePolicy(**raw.measure.model_dump())
    else:  # a fixed step count: every repeat times the same work
        measure = MeasurePolicy(warmup_steps=2 if raw.warmup_steps is None else raw.warmup_steps,
                                min_steps=raw.steps, max_steps=raw.steps, target_rse=0.0,
                                max_measure_s=raw.timeout_s)
    return BenchCase(name=raw.name, spec=spec, point=point, ds_config=ds_config, seq_len=raw.seq_len,
                     nproc=raw.nproc, measure=measure, repeats=raw.repeats, rounds=raw.rounds,
                     max_rounds=raw.max_rounds or 3 * raw.rounds, budget_s=raw.budget_s, turns=raw.turns,
                     retries=raw.retries, timeout_s=raw.timeout_s, thresholds=dict(raw.thresholds))


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite file; every problem is a one-line UserError naming the file."""
    path = Path(path)
    raw = read_user_yaml(path, f"suite file {str(path)!r}")
    if not isinstance(raw, dict):
        raise UserError(f"suite file {str(path)!r} must be a mapping with name and configs")
    try:
        parsed = _SuiteFile.model_validate(raw)
    except ValidationError as error:
        raise UserError(f"suite file {str(path)!r}: {_first_error(error)}") from None
    kernels = None
    if parsed.kernels is not None:
        k = parsed.kernels
        kernels = KernelSource(json_path=path.parent / k.json_file if k.json_file else None, command=k.command,
                               timeout_s=k.timeout_s, threshold=k.threshold, rounds=k.rounds)
    return Suite(name=parsed.name, description=parsed.description, path=path, backend=parsed.backend,
                 thresholds=dict(parsed.thresholds), alpha=parsed.alpha, confidence=parsed.confidence,
                 resamples=parsed.resamples, cases=tuple(_case(c, path.parent, path) for c in parsed.configs),
                 kernels=kernels)
