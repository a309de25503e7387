"""A point of the search space: one complete training configuration, as a frozen dataclass.

Knobs enter as YAML (`autoscale.space`), become a `Point` here, turn into ds_config keys in
`autoscale.ds_config`, and are applied by the engine. Nothing downstream passes knob dicts around.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from autoscale.errors import UserError

ZERO_STAGES = (0, 1, 2, 3)
PRECISIONS = ("fp32", "bf16", "fp16", "fp8")  # fp8: fp8 matmuls, bf16 elsewhere
CHECKPOINTING = ("none", "selective", "full")
OFFLOADS = ("none", "cpu")

# knob name -> allowed values (None: any positive integer; "kernels" is checked against the registry)
KNOB_VALUES: dict[str, tuple | None] = {
    "zero_stage": ZERO_STAGES,
    "micro_batch": None,
    "precision": PRECISIONS,
    "checkpointing": CHECKPOINTING,
    "offload": OFFLOADS,
    "kernels": None,
    "tp": None,
    "pp": None,
    "sp": None,
    "cp": None,
    "vpp": None,
    "megatron_sp": (False, True),
}


@dataclass(frozen=True, kw_only=True)
class Point:
    zero_stage: int
    micro_batch: int
    grad_accum: int
    precision: str = "fp32"
    checkpointing: str = "none"
    offload: str = "none"
    kernels: str = "torch"
    tp: int = 1
    pp: int = 1
    sp: int = 1  # Ulysses sequence-parallel degree
    cp: int = 1  # context-parallel degree
    vpp: int = 1  # virtual pipeline stages per pipeline rank (interleaved 1F1B)
    megatron_sp: bool = False  # Megatron sequence parallelism on top of tp

    def __post_init__(self) -> None:
        if self.zero_stage not in ZERO_STAGES:
            raise UserError(f"zero_stage must be one of {ZERO_STAGES}, got {self.zero_stage!r}")
        for name in ("micro_batch", "grad_accum", "tp", "pp", "sp", "cp", "vpp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        for name, allowed in (("precision", PRECISIONS), ("checkpointing", CHECKPOINTING),
                              ("offload", OFFLOADS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.offload != "none" and self.zero_stage == 0:
            raise UserError("offload needs ZeRO stage 1 or higher (DeepSpeed offloads ZeRO partitions)")
        if not isinstance(self.megatron_sp, bool):
            raise UserError(f"megatron_sp must be true or false, got {self.megatron_sp!r}")
        if self.vpp > 1 and self.pp == 1:
            raise UserError(f"vpp {self.vpp} needs pp > 1 (virtual stages interleave a pipeline)")
        if self.megatron_sp and self.tp == 1:
            raise UserError("megatron_sp needs tp > 1 (it splits the tensor-parallel group's activations)")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Point":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def data_parallel(self, world_size: int) -> int:
        """Ranks that see different samples: sequence- and context-parallel ranks share a sample."""
        return world_size // (self.tp * self.pp * self.sp * self.cp)

    def global_batch(self, world_size: int) -> int:
        return self.micro_batch * self.grad_accum * self.data_parallel(world_size)

    def short(self) -> str:
        """The point in a dozen characters, for tables: z2 mb4x2 bf16 ckpt:full off:cpu."""
        parts = [f"z{self.zero_stage}", f"mb{self.micro_batch}x{self.grad_accum}", self.precision]
        if self.checkpointing != "none":
            parts.append(f"ckpt:{self.checkpointing}")
        if self.offload != "none":
            parts.append(f"off:{self.offload}")
        if self.kernels != "torch":
            parts.append(self.kernels)
        if self.tp > 1 or self.pp > 1:
            parts.append(f"tp{self.tp}pp{self.pp}")
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
        if self.tp > 1 or self.pp > 1:
            parts.append(f"tp {self.tp}, pp {self.pp}")
        return ", ".join(parts)


def baseline_point(global_batch: int, data_parallel: int) -> Point:
    """The plain configuration speed-ups are measured against: ZeRO-0, micro-batch 1, fp32."""
    return Point(zero_stage=0, micro_batch=1, grad_accum=global_batch // data_parallel,
                 precision="fp32", checkpointing="none", offload="none", kernels="torch")
