"""Map a Hugging Face `config.json` (GPT-2, GPT-NeoX, Llama families) onto a `ModelSpec`.

Only the shape is taken; weights are never loaded. Each family names the same quantity
differently, so one table per family says where each field comes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoscale.errors import UserError
from autoscale.userfiles import read_user_json
from autoscale.models.spec import ModelSpec

# spec field -> config key, per family; `None` keys take the family default below
_KEYS = {
    "gpt2": dict(n_layers="n_layer", hidden="n_embd", n_heads="n_head", vocab_size="vocab_size",
                 max_seq_len="n_positions", ffn_hidden="n_inner", norm_eps="layer_norm_epsilon"),
    "gpt_neox": dict(n_layers="num_hidden_layers", hidden="hidden_size",
                     n_heads="num_attention_heads", vocab_size="vocab_size",
                     max_seq_len="max_position_embeddings", ffn_hidden="intermediate_size",
                     norm_eps="layer_norm_eps"),
    "llama": dict(n_layers="num_hidden_layers", hidden="hidden_size",
                  n_heads="num_attention_heads", vocab_size="vocab_size",
                  max_seq_len="max_position_embeddings", ffn_hidden="intermediate_size",
                  n_kv_heads="num_key_value_heads", norm_eps="rms_norm_eps"),
}
_STYLE = {
    "gpt2": dict(norm="layernorm", activation="gelu", position="learned", bias=True),
    "gpt_neox": dict(norm="layernorm", activation="gelu", position="rotary", bias=True),
    "llama": dict(norm="rmsnorm", activation="swiglu", position="rotary", bias=False),
}
_ALIASES = {"mistral": "llama", "qwen2": "llama"}
ATTENTION_FROM_HF = {"flash_attention_2": "flash", "sdpa": "sdpa", "eager": "eager"}
"""transformers' attn_implementation -> ModelSpec.attention; unset means transformers' default, SDPA."""


def _family(config: dict[str, Any]) -> str:
    model_type = str(config.get("model_type", "")).lower()
    model_type = _ALIASES.get(model_type, model_type)
    if model_type in _KEYS:
        return model_type
    for family, keys in _KEYS.items():  # no model_type: recognise by its keys
        if keys["n_layers"] in config and keys["hidden"] in config:
            return family
    raise UserError(f"unsupported Hugging Face model_type {config.get('model_type')!r}: "
                    f"supported are {', '.join(_KEYS)}")


def spec_from_hf_dict(config: dict[str, Any], name: str) -> ModelSpec:
    family = _family(config)
    fields: dict[str, Any] = {}
    for field_name, key in _KEYS[family].items():
        value = config.get(key)
        if value is not None:
            fields[field_name] = value
    for required in ("n_layers", "hidden", "n_heads", "vocab_size", "max_seq_len"):
        if required not in fields:
            raise UserError(f"Hugging Face config {name!r} lacks {_KEYS[family][required]!r}")
    tied = config.get("tie_word_embeddings", family == "gpt2")
    implementation = config.get("attn_implementation") or config.get("_attn_implementation") or "sdpa"
    return ModelSpec(name=name, tie_embeddings=bool(tied), attention=ATTENTION_FROM_HF.get(implementation, "sdpa"),
                     source=f"Hugging Face config ({family})", **_STYLE[family], **fields)


def spec_from_hf_config(path: str | Path) -> ModelSpec:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"model config {str(path)!r} is a directory: give the config.json inside it")
    config = read_user_json(path, f"model config {str(path)!r}")
    if not isinstance(config, dict):
        raise UserError(f"model config {str(path)!r} must hold a JSON object")
    # `llama-7b/config.json` is named by its folder, as the Hub lays models out; `my-model.json` by its stem
    name = (path.parent.name or path.stem) if path.name == "config.json" else path.stem
    return spec_from_hf_dict(config, name=name)
