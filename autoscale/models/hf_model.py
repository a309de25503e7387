"""Hugging Face models as the trial workload (`autoscale tune --impl transformers`).

`build_hf_model` builds `AutoModelForCausalLM.from_config` from a local config (random weights,
nothing downloaded) and wraps it so its forward is `(tokens, targets) -> loss`, the interface the
engine trains (`engine.rank`), as `models.gpt.Transformer` has. The trial's knobs reach the model
the way a user of transformers would apply them: the attention implementation through
`attn_implementation`, full activation recomputation through the model's own
`activation_checkpointing_enable` (transformers has no attention-only recompute, so "selective" is
not offered), and a kernel set by swapping the model's norm and MLP modules for ones that call it,
and computing the loss with its fused linear cross-entropy. Swaps exist per architecture
(`KERNEL_PATCHES`); an architecture without one trains with its own modules and the torch kernel set
only. Swapped modules keep the originals' parameters under the same names, so state dicts,
DeepSpeed's view of the parameters and its AutoTP presets (`AUTOTP_PRESETS`) are those of the
unpatched model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from autoscale.errors import UserError
from autoscale.models.hf_config import ATTENTION_FROM_HF
from autoscale.models.spec import ModelSpec
from autoscale.userfiles import read_user_json
from autoscale.kernels import KernelSet, get_kernel_set

IMPLS = ("own", "transformers")
"""own: autoscale's compact GPT/Llama (`models.gpt`); transformers: the Hugging Face model of a config.json."""
HF_ATTENTION = {ours: theirs for theirs, ours in ATTENTION_FROM_HF.items()}
"""ModelSpec.attention -> transformers' attn_implementation."""
CHECKPOINTING = ("none", "full")
"""What transformers' activation checkpointing offers: every decoder layer recomputed, or nothing."""


class KernelRMSNorm(nn.Module):
    """RMSNorm through a kernel set; owns the replaced norm's weight under the same name."""

    def __init__(self, weight: nn.Parameter, eps: float, kernel_set: KernelSet):
        super().__init__()
        self.weight, self.eps, self.kernel_set = weight, eps, kernel_set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel_set.rms_norm(x, self.weight, self.eps)


class KernelSwiGLU(nn.Module):
    """Llama's MLP, down(silu(gate(x)) * up(x)), with the gate through a kernel set; the replaced
    MLP's three linears are kept under their names (gate_proj, up_proj, down_proj)."""

    def __init__(self, mlp: nn.Module, kernel_set: KernelSet):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.kernel_set = kernel_set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.kernel_set.swiglu(self.gate_proj(x), self.up_proj(x)))


def _patch_llama(model: nn.Module, kernel_set: KernelSet) -> None:
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    if model.config.hidden_act != "silu":
        raise UserError(f"--impl transformers: kernels {kernel_set.name!r} replace Llama's SwiGLU, but this config's "
                        f"hidden_act is {model.config.hidden_act!r}: use kernels torch")
    for name, module in list(model.named_modules()):
        if isinstance(module, LlamaRMSNorm):
            model.set_submodule(name, KernelRMSNorm(module.weight, module.variance_epsilon, kernel_set))
        elif isinstance(module, LlamaMLP):
            model.set_submodule(name, KernelSwiGLU(module, kernel_set))


KERNEL_PATCHES: dict[str, Callable[[nn.Module, KernelSet], None]] = {"llama": _patch_llama}
"""model_type -> the swap of its norm and MLP modules for a kernel set's; each is tested against the
unpatched model's outputs and gradients (tests/test_hf_model.py)."""


AUTOTP_PRESETS = {"llama": "llama"}
"""model_type -> DeepSpeed's AutoTP preset (`tensor_parallel.preset_model`) that names its linears; the
kernel swaps keep those names. Other architectures are not offered tensor parallelism."""


def patchable(config: dict[str, Any]) -> bool:
    """Whether the config's architecture has kernel swaps, so kernel sets other than torch apply."""
    return config.get("model_type") in KERNEL_PATCHES


class CausalLMLoss(nn.Module):
    """A causal LM as the engine trains it: forward(tokens, targets) -> mean next-token cross-entropy.

    `targets` are already shifted (`engine.data`: targets[t] is the token after tokens[t]), so the
    model is never given labels, which transformers would shift again. With a kernel set the loss is
    its fused linear cross-entropy on the base model's last hidden states and the output embedding;
    without one (an architecture without swaps) it is the cross-entropy of the model's own logits,
    in fp32 as transformers computes its loss.
    """

    def __init__(self, model: nn.Module, kernel_set: KernelSet | None):
        super().__init__()
        self.model, self.kernel_set = model, kernel_set

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        if self.kernel_set is None:
            logits = self.model(input_ids=tokens, use_cache=False).logits  # (B, T, vocab)
            return F.cross_entropy(logits.float().reshape(B * T, -1), targets.reshape(B * T))
        hidden = self.model.base_model(input_ids=tokens, use_cache=False).last_hidden_state  # (B, T, h)
        return self.kernel_set.fused_linear_cross_entropy(
            hidden.reshape(B * T, -1), self.model.get_output_embeddings().weight, targets.reshape(B * T))


def _is_dropout(key: str) -> bool:
    """A config key holding a dropout probability (Llama's attention_dropout, GPT-2's resid_pdrop).
    Trials train without dropout, as our own model does: its masks follow the micro-batch layout, so
    no two layouts would train the same numbers and the numerics gate could not compare them."""
    return "dropout" in key or key.endswith("pdrop")


def _enable_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder layer in the backward: transformers 5 names it
    `activation_checkpointing_enable`, earlier versions `gradient_checkpointing_enable`."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_hf_model(config: dict[str, Any], *, kernels: str = "torch", checkpointing: str = "none",
                   attention: str = "sdpa") -> CausalLMLoss:
    """The Hugging Face model of `config` (a config.json's contents), random weights from torch's
    generator, with the trial's kernel set, checkpointing and attention applied."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise UserError("--impl transformers needs transformers: pip install -e .[hf]") from None
    if checkpointing not in CHECKPOINTING:
        raise UserError(f"--impl transformers: checkpointing {checkpointing!r} is not offered by transformers' "
                        f"activation checkpointing (choices: {', '.join(CHECKPOINTING)})")
    model_type = config.get("model_type")
    if kernels != "torch" and not patchable(config):
        raise UserError(f"--impl transformers: kernels {kernels!r} have no module swaps for model_type "
                        f"{model_type!r} (supported: {', '.join(KERNEL_PATCHES)}): use kernels torch or --impl own")
    fields = {key: value for key, value in config.items() if key not in ("model_type", "transformers_version")}
    fields.update({key: 0.0 for key, value in fields.items() if _is_dropout(key) and isinstance(value, float)})
    hf_config = AutoConfig.for_model(model_type, **fields)
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=HF_ATTENTION[attention])
    model.config.use_cache = False
    if checkpointing == "full":
        _enable_checkpointing(model)
    kernel_set = None
    if patchable(config):
        kernel_set = get_kernel_set(kernels)
        KERNEL_PATCHES[model_type](model, kernel_set)
    return CausalLMLoss(model, kernel_set).train()


def workload_config(impl: str, *, model: str, spec: ModelSpec, backend: str) -> dict[str, Any] | None:
    """The config.json a `--impl transformers` study trains, read and checked before any trial; None
    for `--impl own`, which builds `spec` with autoscale's own model."""
    if impl not in IMPLS:
        raise UserError(f"--impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if impl == "own":
        return None
    if not model.endswith(".json"):
        raise UserError(f"--impl transformers builds the Hugging Face model of a config.json: give --model "
                        f"path/to/config.json (e.g. examples/llama-tiny.json), not the preset {model!r}")
    if importlib.util.find_spec("transformers") is None:
        raise UserError("--impl transformers needs transformers: pip install -e .[hf]")
    if spec.attention == "flash" and backend not in ("cuda", "model"):
        raise UserError(f"--model {model}: attn_implementation flash_attention_2 runs on CUDA only: set it to "
                        "sdpa or eager in the config, or use --impl own")
    return read_user_json(Path(model), f"model config {model!r}")
