"""A point of the search space: one complete training configuration, as a frozen dataclass.

`Point`'s fields are the one list of knobs. Everything that lists knobs derives it from here: the
space file's schema (`autoscale.space`), the CSV columns (`autoscale.results`), `estimate`'s flags,
the planner's candidates and the replay tables. A knob is a field with `knob(...)` metadata: its
allowed choices (None: any positive integer) and a one-line help. Rules that need only the point
live in `__post_init__`; rules that need a world size or a model live in `autoscale.layout`.
Knobs turn into ds_config keys in `autoscale.ds_config` and are applied by the engine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from autoscale.errors import RuleError, UserError
from autoscale.models.spec import ATTENTIONS


def knob(default: Any, *, choices: tuple | None = None, help: str) -> Any:
    """A `Point` field that is a knob; `choices` None means any positive integer."""
    return field(default=default, metadata={"knob": True, "choices": choices, "help": help})


@dataclass(frozen=True, kw_only=True)
class Point:
    zero_stage: int = knob(0, choices=(0, 1, 2, 3), help="ZeRO stage: what is partitioned over data-parallel ranks.")
    micro_batch: int = knob(1, help="Sequences per device per micro-step.")
    grad_accum: int = field(default=1, metadata={"help": "Micro-steps per optimizer step (derived from the "
                                                          "global batch, never searched)."})
    precision: str = knob("fp32", choices=("fp32", "bf16", "fp16", "fp8"),
                          help="Training precision (fp8: fp8 matmuls in the blocks, bf16 elsewhere).")
    checkpointing: str = knob("none", choices=("none", "selective", "op", "full"),
                              help="Activation recomputation: none, the attention core (selective), torchtitan's "
                                   "per-operator policy (op: keeps the attention output and every other matmul's), "
                                   "every block (full).")
    offload: str = knob("none", choices=("none", "cpu"), help="Where ZeRO keeps the optimizer states.")
    kernels: str = knob("torch", choices=None, help="Kernel set (see autoscale/kernels/registry.py).")
    attention: str = knob("model", choices=("model", *ATTENTIONS),
                          help="Attention core: the model's own (its config's attn_implementation; sdpa for "
                               "presets), or sdpa, eager, flash (trials: --impl transformers only).")
    tp: int = knob(1, help="Tensor-parallel size.")
    pp: int = knob(1, help="Pipeline-parallel size.")
    sp: int = knob(1, help="Ulysses sequence-parallel size: ranks that split each sequence, all-to-all in attention.")
    cp: int = knob(1, help="Context-parallel size: ranks that split each sequence, ring attention.")
    vpp: int = knob(1, help="Virtual pipeline stages per pipeline rank (interleaved 1F1B); needs pp > 1.")
    megatron_sp: bool = knob(False, choices=(False, True),
                             help="Megatron sequence parallelism: norms and dropout split over the tp group; needs tp > 1.")

    def __post_init__(self) -> None:
        for spec in fields(self):
            value, choices = getattr(self, spec.name), spec.metadata.get("choices")
            if spec.type == "int":
                if not isinstance(value, int) or isinstance(value, bool) or (choices is None and value <= 0):
                    raise UserError(f"{knob_ref(spec.name)} must be a positive integer, got {value!r}")
            if spec.type == "bool" and not isinstance(value, bool):
                raise UserError(f"{knob_ref(spec.name)} must be true or false, got {value!r}")
            if choices is not None and value not in choices:
                raise UserError(f"{knob_ref(spec.name)} must be one of {', '.join(map(str, choices))}, got {value!r}")
        if self.kernels not in _kernel_set_names():
            raise UserError(f"{knob_ref('kernels')}: unknown kernel set {self.kernels!r} "
                            f"(known: {', '.join(_kernel_set_names())})")
        if self.offload != "none" and self.zero_stage == 0:
            raise RuleError("offload needs ZeRO >= 1",
                            f"{knob_ref('offload')} {self.offload!r}: offload needs ZeRO stage 1 or higher "
                            f"(DeepSpeed offloads ZeRO partitions): change {knob_ref('zero_stage')}")
        if self.vpp > 1 and self.pp == 1:
            raise RuleError("vpp needs pp > 1", f"{knob_ref('vpp')} {self.vpp} needs a pipeline: virtual stages "
                                                f"interleave one; change {knob_ref('pp')}")
        if self.megatron_sp and self.tp == 1:
            raise RuleError("megatron_sp needs tp > 1", f"{knob_ref('megatron_sp')} splits the tensor-parallel "
                                                        f"group's activations: it needs {knob_ref('tp')} > 1")

    def as_dict(self) -> dict:
        return asdict(self)

    def attention_for(self, spec) -> str:
        """The attention core this point runs on a `ModelSpec`: the knob's, or the model's for "model"."""
        return spec.attention if self.attention == "model" else self.attention

    @classmethod
    def from_dict(cls, values: Mapping) -> "Point":
        """A point from a mapping that may hold other keys (a summary entry, a trial's attributes)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_row(cls, row: Mapping) -> "Point":
        """A point from a CSV row (strings, or pandas' floats and NaN): each field takes its own type,
        and a missing or empty cell takes the field's default (a table written before the knob existed)."""
        values = {}
        for spec in fields(cls):
            raw = row.get(spec.name)
            if raw is None or raw == "" or (isinstance(raw, float) and math.isnan(raw)):
                continue
            if spec.type == "int":
                values[spec.name] = int(float(raw))
            elif spec.type == "bool":
                values[spec.name] = raw if isinstance(raw, bool) else str(raw).strip().lower() in ("true", "1")
            else:
                values[spec.name] = str(raw)
        return cls(**values)

    @property
    def model_parallel(self) -> int:
        """Ranks that share one replica's batch: tensor, pipeline, sequence and context parallel."""
        return self.tp * self.pp * self.sp * self.cp

    def data_parallel(self, world_size: int) -> int:
        """Replicas, each taking its own micro-batches; ZeRO shards over world / (tp x pp) ranks."""
        return world_size // self.model_parallel

    def global_batch(self, world_size: int) -> int:
        return self.micro_batch * self.grad_accum * self.data_parallel(world_size)

    def key(self) -> tuple:
        """Hashable identity of the point, for sets and dicts of measured points."""
        return tuple(sorted(self.as_dict().items()))

    def short(self) -> str:
        """The point in a dozen characters, for tables: z2 mb4x2 bf16 ckpt:full off:cpu."""
        parts = [f"z{self.zero_stage}", f"mb{self.micro_batch}x{self.grad_accum}", self.precision]
        if self.checkpointing != "none":
            parts.append(f"ckpt:{self.checkpointing}")
        if self.offload != "none":
            parts.append(f"off:{self.offload}")
        if self.kernels != "torch":
            parts.append(self.kernels)
        if self.attention != "model":
            parts.append(f"attn:{self.attention}")
        if self.tp > 1 or self.pp > 1:
            parts.append(f"tp{self.tp}pp{self.pp}" + (f"v{self.vpp}" if self.vpp > 1 else ""))
        parts += [f"{name}{getattr(self, name)}" for name in ("sp", "cp") if getattr(self, name) > 1]
        if self.megatron_sp:
            parts.append("msp")
        return " ".join(parts)

    def describe(self) -> str:
        """The point in plain words, for consoles and reports."""
        parts = [f"ZeRO-{self.zero_stage}", f"micro-batch {self.micro_batch} x {self.grad_accum} accumulation",
                 self.precision]
        if self.checkpointing != "none":
            parts.append(f"{self.checkpointing} checkpointing")
        if self.offload != "none":
            parts.append(f"optimizer offload to {self.offload}")
        if self.kernels != "torch":
            parts.append(f"{self.kernels} kernels")
        if self.attention != "model":
            parts.append(f"{self.attention} attention")
        if self.tp > 1 or self.pp > 1:
            parts.append(f"tp {self.tp}, pp {self.pp}" + (f" x {self.vpp} virtual stages" if self.vpp > 1 else ""))
        parts += [f"{name} {getattr(self, name)}" for name in ("sp", "cp") if getattr(self, name) > 1]
        if self.megatron_sp:
            parts.append("Megatron sequence parallelism")
        return ", ".join(parts)


@dataclass(frozen=True)
class Knob:
    """One knob as the rest of the code sees it, read off `Point`'s field."""

    name: str
    type: type
    default: Any
    choices: tuple | None  # None: any positive integer ("kernels": the kernel-set registry)
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_TYPES = {"int": int, "str": str, "bool": bool}
KNOBS: tuple[Knob, ...] = tuple(Knob(f.name, _TYPES[f.type], f.default, f.metadata["choices"], f.metadata["help"])
                                for f in fields(Point) if f.metadata.get("knob"))
KNOB_NAMES: tuple[str, ...] = tuple(k.name for k in KNOBS)
POINT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Point))  # the knobs and grad_accum, in order
INTEGER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Point) if f.type == "int")
FIELD_TYPES: dict[str, type] = {f.name: _TYPES[f.type] for f in fields(Point)}


def get_knob(name: str) -> Knob:
    return next(k for k in KNOBS if k.name == name)


def knob_choices(name: str) -> tuple:
    """The values a knob may take; "kernels" asks the registry (which may grow at run time)."""
    return _kernel_set_names() if name == "kernels" else get_knob(name).choices


def knob_ref(name: str) -> str:
    """How a user changes a knob: its key in a space file, and its flag (`autoscale estimate`)."""
    if name == "grad_accum":
        return "grad_accum (derived from --global-batch)"
    return f"{name} ({get_knob(name).flag})"


def baseline_point(global_batch: int, data_parallel: int) -> Point:
    """The plain configuration speed-ups are measured against: every knob at its default (ZeRO-0,
    micro-batch 1, fp32, no checkpointing, no offload, torch kernels, no model parallelism)."""
    return Point(grad_accum=global_batch // data_parallel)


def _kernel_set_names() -> tuple[str, ...]:
    from autoscale.kernels import kernel_set_names

    return kernel_set_names()
