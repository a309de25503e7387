"""What each training engine can run: the layout rules that belong to an engine, not to arithmetic.

`layout.check_layout` holds what is true for every engine (model-parallel degrees divide the ranks,
the heads, the layers and the sequence). What can be *combined* depends on who trains the point:
DeepSpeed's pipeline engine cannot share its grid with AutoTP, Megatron-LM interleaves pipeline
stages and splits sequences over the tensor-parallel group, torchtitan runs FSDP2 under a pipeline.
Each engine is one `LayoutTarget` here: its name (`tune --target`, and `export --to` where an export
target of that name exists), the words messages name it by, and its rules. A rule refuses with
the engine's name in its message, so a refusal says who imposes it.

`estimate` predicts a fully given point under the arithmetic alone and lists which targets run it;
plans rank the layouts of one target (default: `TRIAL_ENGINE`, what autoscale's trials measure with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from autoscale.errors import RuleError, UserError
from autoscale.point import Point, knob_ref


@dataclass(frozen=True)
class Rule:
    """One combination an engine cannot run: `name` counts skipped points, `why` names the flag to change."""

    name: str
    refuses: Callable[[Point], bool]
    why: Callable[[Point], str]


PIPELINE_WITH_ZERO_2_3 = Rule(
    "pipeline with ZeRO-2/3", lambda p: p.pp > 1 and p.zero_stage >= 2,
    lambda p: f"its pipeline runs ZeRO stage 0 or 1 only, got ZeRO {p.zero_stage} with pp {p.pp}: change "
              f"{knob_ref('zero_stage')} or {knob_ref('pp')}")
PIPELINE_WITH_ZERO_0 = Rule(
    "pipeline with ZeRO-0", lambda p: p.pp > 1 and p.zero_stage == 0,
    lambda p: f"DeepSpeed's pipeline engine at ZeRO-0 clips each stage's gradients by that stage's own norm "
              f"(gradient_clipping), not the model's, and trains something else: change {knob_ref('zero_stage')} "
              f"to 1 or {knob_ref('pp')}")
FEWER_MICRO_BATCHES_THAN_STAGES = Rule(
    "fewer micro-batches than pipeline stages", lambda p: p.pp > 1 and p.grad_accum < p.pp,
    lambda p: f"{p.grad_accum} micro-batches per step cannot keep pp {p.pp} stages busy (1F1B needs at least one "
              f"per stage): lower {knob_ref('micro_batch')} or {knob_ref('pp')}, or raise --global-batch")
TP_WITH_PP = Rule(
    "tp with pp", lambda p: p.pp > 1 and p.tp > 1,
    lambda p: f"tp {p.tp} with pp {p.pp}: DeepSpeed's AutoTP training replaces the engine's process groups with "
              f"its own tensor-parallel mesh, which its pipeline engine's grid cannot share: change "
              f"{knob_ref('tp')} or {knob_ref('pp')} (Megatron-LM and torchtitan run both: --target)")
SP_WITH_PP = Rule(
    "sp with pp", lambda p: p.pp > 1 and p.sp > 1,
    lambda p: f"sp {p.sp} with pp {p.pp}: the pipeline's stages run whole sequences (its layers take no "
              f"sequence-parallel group): change {knob_ref('sp')} or {knob_ref('pp')}")
TP_WITH_SP = Rule(
    "tp with sp", lambda p: p.tp > 1 and p.sp > 1,
    lambda p: f"DeepSpeed-Ulysses' sequence groups (parallel_state_sp) cannot be combined with AutoTP's "
              f"tensor-parallel groups, got tp {p.tp} with sp {p.sp}: change {knob_ref('tp')} or {knob_ref('sp')}")
NO_ULYSSES = Rule(
    "no Ulysses sp", lambda p: p.sp > 1,
    lambda p: f"it has no DeepSpeed-Ulysses sequence parallelism (sp {p.sp}); its context parallelism splits "
              f"sequences instead: use {knob_ref('cp')}")
ZERO_ABOVE_1 = Rule(
    "ZeRO-2/3", lambda p: p.zero_stage >= 2,
    lambda p: f"its distributed optimizer shards optimizer states only (ZeRO-1), got ZeRO {p.zero_stage}: change "
              f"{knob_ref('zero_stage')}")


def _no(knob: str, value, what: str) -> Rule:
    """A knob the engine cannot set off its default `value`."""
    return Rule(f"no {what}", lambda p: getattr(p, knob) != value,
                lambda p: f"it has no {what} ({knob_ref(knob)} {getattr(p, knob)}): change {knob_ref(knob)}")


NO_CP = _no("cp", 1, "context (ring-attention) parallelism")
NO_VPP = _no("vpp", 1, "interleaved pipeline schedule")
NO_MEGATRON_SP = _no("megatron_sp", False, "Megatron sequence parallelism")
NO_PER_OP_CHECKPOINTING = Rule(
    "no per-op checkpointing", lambda p: p.checkpointing == "op",
    lambda p: f"it has no per-operator checkpointing policy (torchtitan's): change {knob_ref('checkpointing')}")
NO_FP8 = Rule("no fp8", lambda p: p.precision == "fp8",
              lambda p: f"it has no fp8 training (Transformer Engine is the model code's): change {knob_ref('precision')}")


@dataclass(frozen=True)
class LayoutTarget:
    """An engine that trains points: what it is called, and the combinations it refuses."""

    name: str
    engine: str  # how a refusal names it: "DeepSpeed's pipeline engine (autoscale's trials)"
    rules: tuple[Rule, ...]
    export: str | None = None  # the export target whose per-knob refusals also bind (`autoscale.export`)

    def check(self, point: Point) -> None:
        """Raise RuleError, naming this engine, when it cannot train `point` (grad_accum derived)."""
        for rule in self.rules:
            if rule.refuses(point):
                raise RuleError(rule.name, f"{self.engine}: {rule.why(point)}")
        if self.export is not None:
            from autoscale.export import get_target
            from autoscale.export.base import Refuse, outcome_for

            table = get_target(self.export).table
            for knob in table:
                outcome = outcome_for(table, knob, getattr(point, knob))
                if isinstance(outcome, Refuse):
                    raise RuleError(f"{knob} {getattr(point, knob)} not expressible",
                                    f"{self.engine}: {knob_ref(knob)} {getattr(point, knob)}: {outcome.reason}")

    def refusal(self, point: Point) -> RuleError | None:
        try:
            self.check(point)
        except RuleError as error:
            return error
        return None


_DS_CONFIG_ONLY = (NO_CP, NO_VPP, NO_MEGATRON_SP, NO_FP8, NO_PER_OP_CHECKPOINTING)
LAYOUT_TARGETS: dict[str, LayoutTarget] = {target.name: target for target in (
    LayoutTarget("deepspeed", "DeepSpeed's pipeline engine (autoscale's trials)",
                 (PIPELINE_WITH_ZERO_2_3, TP_WITH_SP, TP_WITH_PP, SP_WITH_PP, PIPELINE_WITH_ZERO_0,
                  FEWER_MICRO_BATCHES_THAN_STAGES, *_DS_CONFIG_ONLY)),
    # Megatron-DeepSpeed (BLOOM's trainer): Megatron's tp and sequence parallelism on DeepSpeed's pipeline
    # engine, ZeRO-1 under the pipeline (3D parallelism). Fewer micro-batches than stages run, idling
    # (BLOOM's batch-size ramp-up did); autoscale's trials refuse them as a waste of a measurement
    LayoutTarget("megatron-deepspeed", "Megatron-DeepSpeed",
                 (PIPELINE_WITH_ZERO_2_3, TP_WITH_SP, SP_WITH_PP, PIPELINE_WITH_ZERO_0, NO_CP, NO_VPP, NO_FP8,
                  NO_PER_OP_CHECKPOINTING)),
    # Megatron-LM / Megatron-Bridge: tp, pp, vpp, cp, sequence parallelism, the distributed optimizer (ZeRO-1)
    LayoutTarget("megatron", "Megatron-LM", (ZERO_ABOVE_1, NO_ULYSSES, NO_PER_OP_CHECKPOINTING)),
    # torchtitan: FSDP2 (ZeRO-2/3, or replicas) with tp, pp (any schedule), cp, float8; its export table
    # refuses what its TOML cannot say (ZeRO-1, fp16, optimizer-only offload)
    LayoutTarget("torchtitan", "torchtitan", (NO_ULYSSES,), export="torchtitan"),
    # llm-foundry's published runs: Composer on PyTorch FSDP (ZeRO-2/3), Transformer Engine fp8, no model parallelism
    LayoutTarget("composer", "llm-foundry (Composer, FSDP)",
                 (_no("tp", 1, "tensor parallelism"), _no("pp", 1, "pipeline parallelism"), NO_ULYSSES, NO_CP,
                  NO_PER_OP_CHECKPOINTING)),
    # HF Trainer, Accelerate and Lightning through DeepSpeed: ZeRO only (their export tables say what else)
    *(LayoutTarget(name, label, (), export=name) for name, label in (
        ("hf-trainer", "HF Trainer"), ("accelerate", "Accelerate"), ("lightning", "Lightning"))),
)}

TRIAL_ENGINE = LAYOUT_TARGETS["deepspeed"]
"""What autoscale's own trials run (`engine.pipeline_trial`, `engine.parallel`, `engine.sequence_trial`):
the default target of every plan, since a plan's winner is what `tune` would measure."""


def get_layout_target(name: str) -> LayoutTarget:
    if name not in LAYOUT_TARGETS:
        raise UserError(f"unknown target {name!r} (--target): choose one of {', '.join(LAYOUT_TARGETS)}")
    return LAYOUT_TARGETS[name]


def who_runs(point: Point) -> dict[str, str | None]:
    """Each target's name -> None when it runs `point`, else its refusal's rule ("tp with pp")."""
    return {name: (error.rule if (error := target.refusal(point)) else None)
            for name, target in LAYOUT_TARGETS.items()}


def describe_who_runs(runs: dict[str, str | None]) -> str:
    """`who_runs` for consoles: "DeepSpeed's pipeline engine (autoscale's trials): no (tp with pp); Megatron-LM: yes"."""
    return "; ".join(f"{LAYOUT_TARGETS[name].engine}: " + ("yes" if rule is None else f"no ({rule})")
                     for name, rule in runs.items())
