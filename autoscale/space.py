"""Search spaces: YAML files of knob choices, validated up front, enumerated into `Point`s.

A space file maps each knob to a list of choices. `grad_accum` is never a knob: it is derived so
that micro_batch x grad_accum x data-parallel size equals the global batch the user fixed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from autoscale.errors import UserError
from autoscale.point import Point
from autoscale.userfiles import read_user_yaml

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
KNOBS = ("zero_stage", "micro_batch", "precision", "checkpointing", "offload", "kernels", "tp", "pp")



class _SpaceFile(BaseModel):
    """The schema of a space file; pydantic gives the checks and the messages."""

    model_config = ConfigDict(extra="forbid", strict=True)
    description: str = ""
    zero_stage: list[Literal[0, 1, 2, 3]] = Field(default=[0], min_length=1)
    micro_batch: list[PositiveInt] = Field(default=[1], min_length=1)
    precision: list[Literal["fp32", "bf16", "fp16"]] = Field(default=["fp32"], min_length=1)
    checkpointing: list[Literal["none", "selective", "full"]] = Field(default=["none"], min_length=1)
    offload: list[Literal["none", "cpu"]] = Field(default=["none"], min_length=1)
    kernels: list[str] = Field(default=["torch"], min_length=1)
    tp: list[PositiveInt] = Field(default=[1], min_length=1)
    pp: list[PositiveInt] = Field(default=[1], min_length=1)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    choices: dict[str, tuple]  # knob -> distinct choices, in file order

    def restricted(self, knob: str, allowed: tuple) -> "SearchSpace":
        kept = tuple(v for v in self.choices[knob] if v in allowed)
        if not kept:
            raise UserError(f"space {self.name!r}: no {knob} choice in {list(self.choices[knob])} "
                            f"is available here (available: {list(allowed)})")
        return SearchSpace(self.name, {**self.choices, knob: kept})

    def points(self, *, global_batch: int, world_size: int) -> list[Point]:
        """Every valid point; a micro-batch that does not divide the per-replica batch is skipped."""
        result = []
        for values in itertools.product(*(self.choices[k] for k in KNOBS)):
            knobs = dict(zip(KNOBS, values))
            point = point_for(knobs, global_batch=global_batch, world_size=world_size)
            if point is not None:
                result.append(point)
        return result

    def check_global_batch(self, *, global_batch: int, world_size: int) -> None:
        if not self.points(global_batch=global_batch, world_size=world_size):
            raise UserError(
                f"global batch {global_batch} is impossible in space {self.name!r} on {world_size} ranks: "
                f"it must be a multiple of micro_batch x data-parallel size for some micro_batch in "
                f"{list(self.choices['micro_batch'])}")


def point_for(knobs: dict, *, global_batch: int, world_size: int) -> Point | None:
    """The point for these knob values, or None when they cannot make the global batch."""
    tp, pp = knobs.get("tp", 1), knobs.get("pp", 1)
    if world_size % (tp * pp):
        return None
    data_parallel = world_size // (tp * pp)
    per_step = knobs["micro_batch"] * data_parallel
    if global_batch % per_step:
        return None
    if knobs.get("offload", "none") != "none" and knobs["zero_stage"] == 0:
        return None
    return Point(grad_accum=global_batch // per_step, **knobs)


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A space by file path, or by the name of a file in `search_spaces/` ("default", "zero-only")."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SPACES_DIR / f"{name_or_path}.yaml"
    raw = read_user_yaml(path, f"search space {str(path)!r}",
                         missing=f"search space {str(name_or_path)!r} not found (built-in: "
                                 f"{', '.join(p.stem for p in sorted(SPACES_DIR.glob('*.yaml')))})")
    if not isinstance(raw, dict):
        raise UserError(f"search space {str(path)!r} must be a mapping of knob to list of choices")
    try:
        parsed = _SpaceFile.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError(f"search space {str(path)!r}: {where}: {first['msg']}") from None
    from kernels import kernel_set_names

    unknown = [k for k in parsed.kernels if k not in kernel_set_names()]
    if unknown:
        raise UserError(f"search space {str(path)!r}: kernels: unknown kernel set {unknown[0]!r} "
                        f"(known: {', '.join(kernel_set_names())})")
    choices = {knob: tuple(dict.fromkeys(getattr(parsed, knob))) for knob in KNOBS}
    return SearchSpace(path.stem, choices)
