import json

import pytest
import torch

from autoscale.errors import UserError
from autoscale.models import PRESETS, resolve_model
from autoscale.models.gpt import build_model
from autoscale.models.hf_config import spec_from_hf_dict


@pytest.mark.parametrize("name", list(PRESETS))
def test_param_count_matches_the_built_module(name):
    spec = PRESETS[name]
    with torch.device("meta"):  # no memory: a 13B model is counted, not allocated
        model = build_model(spec)
    assert spec.param_count() == sum(p.numel() for p in model.parameters())
    assert spec.parameter_tensors() == len(list(model.parameters()))
    assert spec.parameter_modules() == sum(1 for m in model.modules() if list(m.parameters(recurse=False)))


def test_gpt3_presets_have_their_paper_sizes():
    expected_millions = {"gpt-125m": 125, "gpt-350m": 350, "gpt-760m": 760, "gpt-1.3b": 1300,
                         "gpt-2.7b": 2700, "gpt-6.7b": 6700, "gpt-13b": 13000, "llama-7b": 6700}
    for name, millions in expected_millions.items():
        assert PRESETS[name].param_count() / 1e6 == pytest.approx(millions, rel=0.05)


def test_flops_per_token_follow_megatron_for_a_gpt_shape():
    spec = PRESETS["gpt-1.3b"]
    s, h, l, v = 2048, spec.hidden, spec.n_layers, spec.vocab_size
    # Narayanan et al. 2021: 72·l·h²(1 + s/(6h)) per token for the blocks, 6·h·V for the logits
    megatron = 72 * l * h * h * (1 + s / (6 * h)) + 6 * h * v
    assert spec.train_flops_per_token(s) == pytest.approx(megatron, rel=1e-9)
    blocks = 72 * l * h * h * (1 + s / (6 * h))
    assert spec.train_flops_per_token(s, recompute=True) == pytest.approx(megatron + blocks / 3, rel=1e-9)


@pytest.mark.parametrize("name", ["gpt-tiny", "llama-tiny"])
@pytest.mark.parametrize("checkpointing", ["none", "selective", "full"])
def test_checkpointing_does_not_change_loss_or_gradients(name, checkpointing):
    spec = PRESETS[name]
    torch.manual_seed(0)
    tokens = torch.randint(0, spec.vocab_size, (2, 33))
    losses, grads = [], []
    for mode in ("none", checkpointing):
        torch.manual_seed(1)
        model = build_model(spec, checkpointing=mode)
        loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        losses.append(loss.item())
        grads.append(model.blocks[0].mlp.up.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1])


def test_loss_of_an_untrained_model_is_near_log_vocab():
    spec = PRESETS["gpt-tiny"]
    torch.manual_seed(0)
    tokens = torch.randint(0, spec.vocab_size, (2, 65))
    loss = build_model(spec)(tokens[:, :-1], tokens[:, 1:])
    assert loss.item() == pytest.approx(torch.log(torch.tensor(float(spec.vocab_size))).item(), rel=0.05)


HF_CONFIGS = {
    "gpt2": {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257,
             "n_positions": 1024, "n_inner": None, "layer_norm_epsilon": 1e-5},
    "gpt_neox": {"model_type": "gpt_neox", "num_hidden_layers": 16, "hidden_size": 2048,
                 "num_attention_heads": 8, "vocab_size": 50304, "max_position_embeddings": 2048,
                 "intermediate_size": 8192, "layer_norm_eps": 1e-5, "tie_word_embeddings": False},
    "llama": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
              "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048,
              "intermediate_size": 11008, "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
}


def test_hf_gpt2_config_maps_to_the_gpt2_small_shape():
    spec = spec_from_hf_dict(HF_CONFIGS["gpt2"], name="gpt2")
    assert (spec.n_layers, spec.hidden, spec.ffn_hidden, spec.norm, spec.tie_embeddings) == (12, 768, 3072, "layernorm", True)
    assert spec.param_count() == pytest.approx(124.4e6, rel=0.01)  # GPT-2 small


def test_hf_llama_config_maps_to_llama_7b():
    spec = spec_from_hf_dict(HF_CONFIGS["llama"], name="llama")
    assert spec.param_count() == PRESETS["llama-7b"].param_count()


def test_hf_neox_config_uses_rotary_and_layernorm():
    spec = spec_from_hf_dict(HF_CONFIGS["gpt_neox"], name="neox")
    assert (spec.position, spec.norm, spec.activation) == ("rotary", "layernorm", "gelu")


def test_model_flag_accepts_a_config_json_path(tmp_path):
    path = tmp_path / "my-llama" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(HF_CONFIGS["llama"]))
    assert resolve_model(str(path)).name == "my-llama"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"model_type": "t5", "d_model": 512}), "unsupported Hugging Face model_type"),
    (json.dumps({"model_type": "llama", "hidden_size": 64}), "lacks"),
    (json.dumps({**HF_CONFIGS["llama"], "num_attention_heads": 5}), "not divisible"),
])
def test_bad_hf_configs_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        resolve_model(str(path))


def test_unknown_model_names_the_presets():
    with pytest.raises(UserError, match="unknown model 'gpt-5'.*gpt-tiny"):
        resolve_model("gpt-5")


@pytest.mark.parametrize("name", ["gpt-tiny", "llama-tiny"])
def test_attention_sharded_by_heads_sums_to_the_whole(name):
    """Each tensor-parallel rank holds whole heads of q, k and v and the matching rows of the output
    projection; the attention must read its head count off its shard, and the shards' outputs sum
    to the unsharded attention's (the row-parallel all-reduce)."""
    from autoscale.models.gpt import Attention, rotary_tables
    from autoscale.kernels import get_kernel_set

    spec, shards = PRESETS[name], 2
    torch.manual_seed(0)
    whole = Attention(spec, get_kernel_set("torch"), selective_recompute=False)
    x = torch.randn(2, 16, spec.hidden)
    rotary = rotary_tables(spec.max_seq_len, spec.head_dim) if spec.position == "rotary" else None
    total = torch.zeros_like(x)
    q_width, kv_width = spec.hidden // shards, spec.kv_hidden // shards
    for shard in range(shards):
        part = Attention(spec, get_kernel_set("torch"), selective_recompute=False)
        q, k, v = whole.qkv.weight.split([spec.hidden, spec.kv_hidden, spec.kv_hidden])
        rows = [q[shard * q_width:(shard + 1) * q_width], k[shard * kv_width:(shard + 1) * kv_width],
                v[shard * kv_width:(shard + 1) * kv_width]]
        part.qkv = torch.nn.Linear(spec.hidden, q_width + 2 * kv_width, bias=spec.bias)
        part.out = torch.nn.Linear(q_width, spec.hidden, bias=spec.bias and shard == 0)
        with torch.no_grad():
            part.qkv.weight.copy_(torch.cat(rows))
            part.out.weight.copy_(whole.out.weight[:, shard * q_width:(shard + 1) * q_width])
            if spec.bias:
                qb, kb, vb = whole.qkv.bias.split([spec.hidden, spec.kv_hidden, spec.kv_hidden])
                part.qkv.bias.copy_(torch.cat([qb[shard * q_width:(shard + 1) * q_width],
                                               kb[shard * kv_width:(shard + 1) * kv_width],
                                               vb[shard * kv_width:(shard + 1) * kv_width]]))
                if shard == 0:
                    part.out.bias.copy_(whole.out.bias)
        total += part(x, rotary).detach()
    torch.testing.assert_close(total, whole(x, rotary).detach(), rtol=1e-5, atol=1e-5)
