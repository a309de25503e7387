"""Model presets by name. A new preset is one `register(...)` line.

GPT-3 shapes are from Brown et al. 2020, Table 2.1 (sequence length 2048), with the vocabulary
padded from 50257 to 50304 (a multiple of 64, as Megatron-LM and nanoGPT do for matmul speed) and
head dimension 128 for the 1.3B model (the paper's 24 heads of 128 do not divide 2048). Llama-7B is
Touvron et al. 2023, Table 2. Llama 2 13B/70B and Llama 3.1 8B/70B/405B are their released
configurations (Touvron et al. 2023b, Table 1 and the Hugging Face config.json files; Llama Team
2024, Table 3): grouped-query attention with 8 KV heads except Llama 2 13B, untied embeddings.
"""

from __future__ import annotations

from autoscale.errors import UserError, did_you_mean
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

register(ModelSpec(name="llama-2-13b", n_layers=40, hidden=5120, n_heads=40, vocab_size=32000,
                   max_seq_len=4096, ffn_hidden=13824, **LLAMA_STYLE,
                   source="Touvron et al. 2023b (Llama 2), released config"))
register(ModelSpec(name="llama-2-70b", n_layers=80, hidden=8192, n_heads=64, n_kv_heads=8, vocab_size=32000,
                   max_seq_len=4096, ffn_hidden=28672, **LLAMA_STYLE,
                   source="Touvron et al. 2023b (Llama 2), released config"))
for _name, _layers, _hidden, _heads, _ffn in (("llama-3.1-8b", 32, 4096, 32, 14336),
                                              ("llama-3.1-70b", 80, 8192, 64, 28672),
                                              ("llama-3.1-405b", 126, 16384, 128, 53248)):
    register(ModelSpec(name=_name, n_layers=_layers, hidden=_hidden, n_heads=_heads, n_kv_heads=8,
                       vocab_size=128256, max_seq_len=131072, ffn_hidden=_ffn, **LLAMA_STYLE,
                       source="Llama Team 2024, Table 3; vocabulary of the released tokenizer"))


def resolve_model(name_or_path: str) -> ModelSpec:
    """A preset name, or the path of a Hugging Face `config.json`."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if name_or_path.endswith(".json"):
        from autoscale.models.hf_config import spec_from_hf_config

        return spec_from_hf_config(name_or_path)
    raise UserError(f"unknown model {name_or_path!r}{did_you_mean(name_or_path, PRESETS)}: choose one of "
                    f"{', '.join(PRESETS)} or give a Hugging Face config.json")
