"""Search spaces: YAML files of knob choices, validated up front, enumerated into `Point`s.

A space file maps knobs (`Point`'s knob fields, the schema is built from them) to lists of choices;
a knob left out keeps its default. `grad_accum` is never a knob: it is derived so that micro_batch x
grad_accum x data-parallel size equals the global batch the user fixed (`autoscale.layout`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, PositiveInt, ValidationError, create_model

from autoscale.errors import UserError
from autoscale.layout import describe_skipped, enumerate_points
from autoscale.point import KNOBS, Point, knob_choices
from autoscale.userfiles import read_user_yaml

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


def _choice_type(knob):
    if knob.choices is not None:
        return Literal[knob.choices]
    return PositiveInt if knob.type is int else knob.type


_SpaceFile = create_model(
    "_SpaceFile", __config__=ConfigDict(extra="forbid", strict=True), description=(str, ""),
    **{k.name: (list[_choice_type(k)], Field(default=[k.default], min_length=1, description=k.help)) for k in KNOBS})
"""The schema of a space file, one list-valued key per knob; pydantic gives the checks and messages."""


@dataclass(frozen=True)
class SearchSpace:
    name: str
    choices: dict[str, tuple]  # knob -> distinct choices, in file order; every knob (left out: its default)

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", {k.name: tuple(self.choices.get(k.name, (k.default,))) for k in KNOBS})

    def restricted(self, knob: str, allowed: tuple) -> "SearchSpace":
        kept = tuple(v for v in self.choices[knob] if v in allowed)
        if not kept:
            raise UserError(f"space {self.name!r}: no {knob} choice in {list(self.choices[knob])} "
                            f"is available here (available: {list(allowed)})")
        return SearchSpace(self.name, {**self.choices, knob: kept})

    def enumerate(self, *, global_batch: int, world_size: int, spec=None) -> tuple[list[Point], Counter]:
        """Every point that can be laid out, and how many each layout rule skipped."""
        return enumerate_points(self.choices, global_batch=global_batch, world_size=world_size, spec=spec)

    def points(self, *, global_batch: int, world_size: int, spec=None) -> list[Point]:
        return self.enumerate(global_batch=global_batch, world_size=world_size, spec=spec)[0]

    def check_global_batch(self, *, global_batch: int, world_size: int) -> None:
        points, skipped = self.enumerate(global_batch=global_batch, world_size=world_size)
        if not points:
            raise UserError(f"no point of space {self.name!r} can be laid out for global batch {global_batch} on "
                            f"{world_size} ranks (skipped: {describe_skipped(skipped)}); change --global-batch "
                            f"or micro_batch in the space (choices: {list(self.choices['micro_batch'])})")

    def check_scriptable(self) -> None:
        """A script trial applies only the ds_config's knobs (`engine.capabilities.SCRIPT_KNOBS`): refuse,
        by space key, any other knob the space varies or moves off its default."""
        from autoscale.engine.capabilities import SCRIPT_KNOBS

        for knob in KNOBS:
            if knob.name not in SCRIPT_KNOBS and self.choices[knob.name] != (knob.default,):
                raise UserError(f"space {self.name!r}: {knob.name} {list(self.choices[knob.name])}: a --script trial "
                                f"cannot apply {knob.name} (only {', '.join(SCRIPT_KNOBS)}, through its ds_config); "
                                f"remove the {knob.name} key or pin it to [{knob.default}]")

    def for_backend(self, backend: str, *, global_batch: int, world_size: int, impl: str = "own",
                    hf_config: dict | None = None) -> "SearchSpace":
        """Keep what trials on this backend of this workload (`--impl`, the config it builds) can run
        (`engine.capabilities`) and the micro-batches that can make the global batch; fail early if
        nothing is left. `dropped_choices` says what went."""
        from autoscale.engine.capabilities import TRIAL_CHOICES, workload_choices

        space = self
        for knob, runnable in [*TRIAL_CHOICES.items(), *workload_choices(impl, hf_config, backend).items()]:
            space = space.restricted(knob, runnable)
        if backend == "cpu":
            space = space.restricted("precision", ("fp32", "bf16"))
            space = space.restricted("kernels", cpu_kernel_sets())
        space.check_global_batch(global_batch=global_batch, world_size=world_size)
        usable = {p.micro_batch for p in space.points(global_batch=global_batch, world_size=world_size)}
        return space.restricted("micro_batch", tuple(m for m in space.choices["micro_batch"] if m in usable))


def cpu_kernel_sets() -> tuple[str, ...]:
    """Kernel sets worth measuring on CPU: Triton's run only under its interpreter there
    (TRITON_INTERPRET=1, slow: correctness, not speed), otherwise they would fall back to torch."""
    return ("torch", "compile", "triton") if os.environ.get("TRITON_INTERPRET") == "1" else ("torch", "compile")


def dropped_choices(before: SearchSpace, after: SearchSpace) -> list[str]:
    """What `for_backend` left out, for the console: nothing is dropped silently."""
    return [f"{knob} {value}" for knob, values in before.choices.items() for value in values
            if value not in after.choices[knob]]


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
    unknown = [k for k in parsed.kernels if k not in knob_choices("kernels")]
    if unknown:
        raise UserError(f"search space {str(path)!r}: kernels: unknown kernel set {unknown[0]!r} "
                        f"(known: {', '.join(knob_choices('kernels'))})")
    return SearchSpace(path.stem, {k.name: tuple(dict.fromkeys(getattr(parsed, k.name))) for k in KNOBS})
