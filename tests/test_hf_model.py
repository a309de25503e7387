"""Hugging Face models as the trial workload: the kernel swaps match the unpatched model, the loss is
transformers' own, what cannot be applied is refused by name, and a 2-rank trial passes the gate.

TRITON_INTERPRET is set before the kernels are first used, as in test_kernels.py, so the Triton
kernel set runs on CPU.
"""

import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from autoscale.engine import TrialRequest, run_trial  # noqa: E402
from autoscale.engine.data import sample_tokens  # noqa: E402
from autoscale.engine.numerics import run_reference  # noqa: E402
from autoscale.engine.request import MeasurePolicy, reference_request  # noqa: E402
from autoscale.errors import UserError  # noqa: E402
from autoscale.models.hf_config import spec_from_hf_config, spec_from_hf_dict  # noqa: E402
from autoscale.models.hf_model import AUTOTP_PRESETS, KernelRMSNorm, KernelSwiGLU, build_hf_model  # noqa: E402
from autoscale.point import Point  # noqa: E402
from autoscale.space import load_space  # noqa: E402

transformers = pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "llama-tiny.json"
# Smaller than the example, for the Triton interpreter: two layers, grouped-query attention.
LLAMA = dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=256, max_position_embeddings=64, rms_norm_eps=1e-6,
             hidden_act="silu", tie_word_embeddings=False)
GPT2 = dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=64, bos_token_id=0,
            eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # unpatched() keeps dropout as given
# The same fp32 arithmetic in another order, through two layers, a loss and its backward.
TOLERANCE = dict(atol=1e-5, rtol=1e-4)


def unpatched(config: dict, seed: int = 0) -> torch.nn.Module:
    """The model as transformers builds it, with the weights `build_hf_model` draws for the same seed."""
    fields = {k: v for k, v in config.items() if k != "model_type"}
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(config["model_type"], **fields), attn_implementation="sdpa")
    return model.train()


def patched(config: dict, seed: int = 0, **knobs):
    torch.manual_seed(seed)
    return build_hf_model(config, **knobs)


def tokens(batch: int = 2, length: int = 12, vocab: int = 256) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length + 1), generator=torch.Generator().manual_seed(3))


def hf_loss_and_grads(model: torch.nn.Module, sequence: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """transformers' own loss: given labels, it shifts them itself, so the whole sequence goes in and
    the last position (whose target lies past the sequence) is ignored."""
    loss = model(input_ids=sequence, labels=sequence).loss
    loss.backward()
    return loss, {name: p.grad for name, p in model.named_parameters()}


def our_loss_and_grads(wrapper: torch.nn.Module, sequence: torch.Tensor) -> tuple[torch.Tensor, dict]:
    loss = wrapper(sequence[:, :-1], sequence[:, 1:])
    loss.backward()
    return loss, {name.removeprefix("model."): p.grad for name, p in wrapper.named_parameters()}


def assert_same_loss_and_grads(config: dict, **knobs) -> None:
    sequence = tokens()
    expected_loss, expected_grads = hf_loss_and_grads(unpatched(config), sequence)
    loss, grads = our_loss_and_grads(patched(config, **knobs), sequence)
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE)
    assert grads.keys() == expected_grads.keys()  # the swaps keep every parameter under its name
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], **TOLERANCE, msg=f"gradient of {name}")


def test_the_loss_is_transformers_own_loss_on_labels_it_shifts_itself():
    sequence = tokens()
    expected, _ = hf_loss_and_grads(unpatched(LLAMA), sequence)
    loss, _ = our_loss_and_grads(patched(LLAMA), sequence)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_llama_s_norms_and_mlps_are_swapped_for_the_kernel_set_s_and_keep_their_parameters():
    model = patched(LLAMA, kernels="torch").model
    norms = [m for m in model.modules() if isinstance(m, KernelRMSNorm)]
    mlps = [m for m in model.modules() if isinstance(m, KernelSwiGLU)]
    assert len(norms) == 2 * LLAMA["num_hidden_layers"] + 1 and len(mlps) == LLAMA["num_hidden_layers"]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in unpatched(LLAMA).parameters())


def test_the_torch_kernel_swaps_match_the_unpatched_llama_s_loss_and_every_gradient():
    assert_same_loss_and_grads(LLAMA, kernels="torch")


@pytest.mark.nightly
@pytest.mark.slow
def test_the_triton_kernel_swaps_match_the_unpatched_llama_s_loss_and_every_gradient():
    pytest.importorskip("triton")
    assert_same_loss_and_grads(LLAMA, kernels="triton")


def test_full_checkpointing_recomputes_the_layers_and_changes_no_gradient():
    assert_same_loss_and_grads(LLAMA, checkpointing="full")


def test_an_architecture_without_swaps_trains_unpatched_on_its_own_logits():
    assert_same_loss_and_grads(GPT2, kernels="torch")


def test_trials_train_without_dropout_so_every_layout_draws_the_same_numbers():
    with_dropout = {**GPT2, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "summary_first_dropout": 0.1}
    wrapper = patched(with_dropout)
    assert all(getattr(wrapper.model.config, key) == 0.0 for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))
    sequence = tokens()
    losses = [wrapper(sequence[:, :-1], sequence[:, 1:]).item() for _ in range(2)]  # in training mode
    assert losses[0] == losses[1]  # with dropout, each forward would draw other masks


def test_kernels_an_architecture_has_no_swaps_for_are_refused_by_name():
    with pytest.raises(UserError, match=r"--impl transformers: kernels 'triton' have no module swaps for "
                                        r"model_type 'gpt2' \(supported: llama\)"):
        build_hf_model(GPT2, kernels="triton")


def test_selective_checkpointing_is_refused_by_name():
    with pytest.raises(UserError, match="checkpointing 'selective' is not offered"):
        build_hf_model(LLAMA, checkpointing="selective")


def test_a_transformers_study_searches_attention_and_drops_what_its_trials_cannot_apply(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("attention: [model, sdpa, eager]\ncheckpointing: [none, selective, full]\n"
                    "kernels: [torch, compile]\ntp: [1, 2]\npp: [1, 2]\nsp: [1, 2]\n")
    space = load_space(path)
    own = space.for_backend("cpu", global_batch=4, world_size=2)
    llama = space.for_backend("cpu", global_batch=4, world_size=2, impl="transformers", hf_config=LLAMA)
    gpt2 = space.for_backend("cpu", global_batch=4, world_size=2, impl="transformers", hf_config=GPT2)
    assert own.choices["attention"] == ("model",) and own.choices["checkpointing"] == ("none", "selective", "full")
    assert llama.choices["attention"] == ("model", "sdpa", "eager")
    assert llama.choices["checkpointing"] == ("none", "full") and llama.choices["tp"] == (1, 2)
    assert llama.choices["kernels"] == ("torch", "compile") and gpt2.choices["kernels"] == ("torch",)
    assert gpt2.choices["tp"] == (1,)
    assert own.choices["pp"] == own.choices["sp"] == (1, 2)  # built into our model's layers only
    assert llama.choices["pp"] == llama.choices["sp"] == (1,)


def test_deepspeed_s_llama_preset_shards_every_linear_of_the_swapped_blocks_and_nothing_else():
    from deepspeed.module_inject.autotp_config import AutoTPPresets

    preset = AutoTPPresets.get_preset(AUTOTP_PRESETS["llama"])
    sharded = {name for name, _ in patched(LLAMA, kernels="torch").named_parameters()
               if preset.find_matching_spec(name) is not None}
    layers = LLAMA["num_hidden_layers"]
    assert len(sharded) == 7 * layers  # q, k, v, o, gate, up, down
    assert not any("norm" in name or "embed" in name or "lm_head" in name for name in sharded)


def test_the_attention_knob_is_the_model_s_attn_implementation():
    assert patched(LLAMA, attention="eager").model.config._attn_implementation == "eager"
    assert_same_loss_and_grads(LLAMA, attention="eager")  # the unpatched model runs sdpa: same numbers


def test_the_example_config_is_the_llama_tiny_preset_s_shape():
    from autoscale.models import PRESETS

    spec = spec_from_hf_config(EXAMPLE)
    assert spec.param_count() == PRESETS["llama-tiny"].param_count()
    assert spec.param_count() == sum(p.numel() for p in unpatched(json.loads(EXAMPLE.read_text())).parameters())


GLOBAL_BATCH, SEQ_LEN, SEED = 4, 16, 1


@pytest.mark.slow
def test_two_rank_transformers_trials_train_the_config_s_model_and_pass_the_gate_data_and_tensor_parallel(
        tmp_path):
    config = json.loads(EXAMPLE.read_text())
    spec = spec_from_hf_dict(config, name="llama-tiny")
    reference, why = run_reference(run_trial, reference_request(
        spec=spec, seq_len=SEQ_LEN, global_batch=GLOBAL_BATCH, nproc=2, backend="cpu",
        workdir=tmp_path / "reference", timeout_s=180, seed=SEED, impl="transformers", hf_config=config))
    assert reference is not None, why
    # the reference's first loss is the Hugging Face model's on the first global batch, before any update
    torch.manual_seed(SEED)
    model = build_hf_model(config)
    batch = torch.stack([sample_tokens(i, seed=SEED, seq_len=SEQ_LEN, vocab_size=spec.vocab_size)
                         for i in range(GLOBAL_BATCH)])
    with torch.no_grad():
        assert reference.losses[0] == pytest.approx(model(batch[:, :-1], batch[:, 1:]).item(), rel=1e-5)
    request = TrialRequest(
        spec=spec, point=Point(zero_stage=2, micro_batch=2, grad_accum=1, checkpointing="full"), seq_len=SEQ_LEN,
        nproc=2, workdir=tmp_path / "trial", timeout_s=180, seed=SEED, reference=reference, impl="transformers",
        hf_config=config, measure=MeasurePolicy(warmup_steps=1, min_steps=2, max_steps=3, target_rse=1.0))
    result = run_trial(request)
    assert result.ok, result.reason
    assert result.loss_gap < 1e-4 and result.tokens_per_s > 0 and result.peak_bytes > 50 * 2**20
    sharded = run_trial(replace(request, point=Point(zero_stage=1, micro_batch=2, grad_accum=2, tp=2),
                                workdir=tmp_path / "tp"))
    assert sharded.ok, sharded.reason
    assert sharded.loss_gap < 1e-4 and sharded.grad_norm0 == pytest.approx(reference.grad_norm0, rel=1e-5)


def test_a_transformers_study_needs_a_config_json_and_flash_attention_needs_cuda(tmp_path):
    from autoscale.models import PRESETS
    from autoscale.models.hf_model import workload_config

    assert workload_config("own", model="llama-tiny", spec=PRESETS["llama-tiny"], backend="cpu") is None
    with pytest.raises(UserError, match="give --model path/to/config.json .* not the preset 'llama-tiny'"):
        workload_config("transformers", model="llama-tiny", spec=PRESETS["llama-tiny"], backend="cpu")
    flash = tmp_path / "flash.json"
    flash.write_text(json.dumps({**LLAMA, "attn_implementation": "flash_attention_2"}))
    with pytest.raises(UserError, match="flash_attention_2 runs on CUDA only"):
        workload_config("transformers", model=str(flash), spec=spec_from_hf_config(flash), backend="cpu")
    assert workload_config("transformers", model=str(EXAMPLE), spec=spec_from_hf_config(EXAMPLE),
                           backend="cpu") == json.loads(EXAMPLE.read_text())
