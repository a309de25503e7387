"""Model presets by name. A new preset is one `register(...)` line.

GPT-3 shapes are from Brown et al. 2020, Table 2.1 (sequence length 2048), with the vocabulary
padded from 50257 to 50304 (a multiple of 64, as Megatron-LM and nanoGPT do for matmul speed) and
head dimension 128 for the 1.3B model (the paper's 24 heads of 128 do not divide 2048). Llama-7B is
Touvron et al. 2023, Table 2.
"""

from __future__ import annotations

from autoscale.errors import UserError
from autoscale.models.spec import ModelSpec

PRESETS: dict[str, ModelSpec] = {}

GPT3_VOCAB = 50304
LLAMA_STYLE = dict(norm="rmsnorm", activation="swiglu", position="rotary", bias=False,
                   tie_embeddings=False, norm_eps=1e-6)


def register(spec: ModelSpec) -> ModelSpec:
    PRESETS[spec.name] = spec
    return spec


def _gpt3(name: str, n_layers: int, hidden: int, n_heads: int) -> ModelSpec:
    return register(ModelSpec(name=name, n_layers=n_layers, hidden=hidden, n_heads=n_heads,
                              vocab_size=GPT3_VOCAB, max_seq_len=2048,
                              source="Brown et al. 2020, Table 2.1"))


register(ModelSpec(name="gpt-tiny", n_layers=4, hidden=128, n_heads=4, vocab_size=2048,
                   max_seq_len=128, source="autoscale test model: seconds on 2 CPU cores"))
register(ModelSpec(name="llama-tiny", n_layers=4, hidden=128, n_heads=4, vocab_size=2048,
                   max_seq_len=128, ffn_hidden=344, **LLAMA_STYLE,
                   source="autoscale test model with Llama's blocks"))
_gpt3("gpt-125m", 12, 768, 12)
_gpt3("gpt-350m", 24, 1024, 16)
_gpt3("gpt-760m", 24, 1536, 16)
_gpt3("gpt-1.3b", 24, 2048, 16)
_gpt3("gpt-2.7b", 32, 2560, 32)
_gpt3("gpt-6.7b", 32, 4096, 32)
_gpt3("gpt-13b", 40, 5120, 40)
register(ModelSpec(name="llama-7b", n_layers=32, hidden=4096, n_heads=32, vocab_size=32000,
                   max_seq_len=2048, ffn_hidden=11008, **LLAMA_STYLE,
                   source="Touvron et al. 2023, Table 2"))


def resolve_model(name_or_path: str) -> ModelSpec:
    """A preset name, or the path of a Hugging Face `config.json`."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if name_or_path.endswith(".json"):
        from autoscale.models.hf_config import spec_from_hf_config

        return spec_from_hf_config(name_or_path)
    raise UserError(f"unknown model {name_or_path!r}: choose one of {', '.join(PRESETS)} "
                    "or give a Hugging Face config.json")
