"""The Triton kernels match their torch references, forward and every gradient, in the Triton interpreter on CPU.

TRITON_INTERPRET must be set before the kernel modules are first imported (Triton decides at
@triton.jit time); they import lazily, on first use, so setting it here at collection suffices.
Shapes are small because the interpreter runs each program as Python.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import autoscale.kernels as kernels  # noqa: E402
from autoscale.kernels import get_kernel_set, reference  # noqa: E402

pytest.importorskip("triton", reason="the Triton kernels need triton (the interpreter runs them on CPU)")
from autoscale.kernels.fused_linear_cross_entropy import FusedLinearCrossEntropyFunction  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error::autoscale.kernels._dispatch.KernelFallbackWarning")

TOLERANCES = {
    # Same arithmetic in a different order (row sums, fused multiply-adds): a few fp32 ulps on O(1..10) values.
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    # Against the exact result rounded to bf16: the kernels' inputs to matmuls (logits, their gradient) are
    # bf16 and their outputs round once more, so two bf16 roundings, up to 2 * 2^-7 relative, plus an
    # absolute floor for values that cancel towards zero.
    torch.bfloat16: dict(atol=2e-2, rtol=1.6e-2),
}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


def assert_matches_reference(fused, reference_fn, inputs, dtype):
    """Run both on copies of `inputs`, backpropagate the same random output gradients, compare all results.

    The truth is the reference computed in fp32 from the same (bf16-rounded) inputs, rounded to the
    kernel's output dtype: torch's own bf16 path rounds intermediates (CPU LayerNorm's bf16 weight
    gradient is off by 0.6 on values near 40), so it is a noisier target than the exact result.
    The output dtypes must still be those of the reference run in the input dtype.
    """
    generator = torch.Generator().manual_seed(1)
    fused_inputs = [_leaf(t) for t in inputs]
    reference_inputs = [_leaf(t.float() if t.is_floating_point() else t) for t in inputs]
    fused_out = _as_tuple(fused(*fused_inputs))
    reference_out = _as_tuple(reference_fn(*reference_inputs))
    with torch.no_grad():
        expected_dtypes = [o.dtype for o in _as_tuple(reference_fn(*inputs))]
    assert [o.dtype for o in fused_out] == expected_dtypes
    grads = [torch.randn(o.shape, generator=generator).to(o.dtype) for o in fused_out]
    torch.autograd.backward(fused_out, grads)
    torch.autograd.backward(reference_out, [g.float() for g in grads])
    for fused_tensor, reference_tensor in zip(fused_out, reference_out):
        _assert_close(fused_tensor, reference_tensor, dtype, "output")
    for position, (fused_input, reference_input) in enumerate(zip(fused_inputs, reference_inputs)):
        if fused_input.requires_grad:
            assert fused_input.grad is not None, f"no gradient for input {position}"
            assert fused_input.grad.dtype == fused_input.dtype
            _assert_close(fused_input.grad, reference_input.grad, dtype, f"gradient of input {position}")


def _assert_close(actual: torch.Tensor, exact: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    torch.testing.assert_close(actual.float(), exact.to(actual.dtype).float(), equal_nan=True, msg=what,
                               **TOLERANCES[dtype])


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(t.requires_grad)


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _randn(*shape, dtype, scale=1.0, requires_grad=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).to(dtype).requires_grad_(requires_grad)


NORM_SHAPES = pytest.mark.parametrize("shape", [(1, 128), (1, 100), (201, 96), (2, 5, 333)],
                                      ids=["one-row", "one-row-hidden-100", "many-rows", "3d-hidden-333"])


@DTYPES
@NORM_SHAPES
def test_rms_norm_matches_reference(shape, dtype):
    x = _randn(*shape, dtype=dtype)
    weight = (1 + 0.5 * _randn(shape[-1], dtype=torch.float32, seed=1)).to(dtype).detach().requires_grad_()
    assert_matches_reference(kernels.rms_norm, reference.rms_norm, [x, weight], dtype)


@DTYPES
@NORM_SHAPES
def test_layer_norm_matches_reference(shape, dtype):
    x = _randn(*shape, dtype=dtype, scale=2.0)
    weight = (1 + 0.5 * _randn(shape[-1], dtype=torch.float32, seed=1)).to(dtype).detach().requires_grad_()
    bias = _randn(shape[-1], dtype=dtype, seed=2)
    assert_matches_reference(kernels.layer_norm, reference.layer_norm, [x, weight, bias], dtype)


def test_layer_norm_without_bias_matches_reference():
    x, weight = _randn(7, 50, dtype=torch.float32), _randn(50, dtype=torch.float32, seed=1)
    assert_matches_reference(lambda x, w: kernels.layer_norm(x, w, None),
                             lambda x, w: reference.layer_norm(x, w, None), [x, weight], torch.float32)


ELEMENTWISE_SHAPES = pytest.mark.parametrize("shape", [(1, 1), (3, 1000), (2, 3, 1500)],
                                             ids=["one-element", "row-under-block", "rows-over-block"])


@DTYPES
@ELEMENTWISE_SHAPES
def test_swiglu_matches_reference(shape, dtype):
    gate, up = _randn(*shape, dtype=dtype, scale=3.0), _randn(*shape, dtype=dtype, seed=1)
    assert_matches_reference(kernels.swiglu, reference.swiglu, [gate, up], dtype)


@DTYPES
def test_swiglu_reads_the_halves_of_a_chunked_projection_in_place(dtype):
    projection = _randn(2, 3, 2 * 344, dtype=dtype, scale=2.0)
    assert_matches_reference(lambda p: kernels.swiglu(*p.chunk(2, dim=-1)),
                             lambda p: reference.swiglu(*p.chunk(2, dim=-1)), [projection], dtype)


@DTYPES
@ELEMENTWISE_SHAPES
def test_gelu_matches_reference(shape, dtype):
    assert_matches_reference(kernels.gelu, reference.gelu, [_randn(*shape, dtype=dtype, scale=3.0)], dtype)


def test_gelu_saturates_without_overflow_for_large_inputs():
    x = torch.tensor([-1e4, -30.0, 30.0, 1e4], requires_grad=True)
    assert_matches_reference(kernels.gelu, reference.gelu, [x], torch.float32)


def _rotary_tables(seq_len, head_dim, seed=3):
    angles = _randn(seq_len, head_dim, dtype=torch.float32, requires_grad=False, seed=seed)
    return angles.cos(), angles.sin()


@DTYPES
@pytest.mark.parametrize("q_shape, k_heads", [((1, 1, 1, 2), 1), ((2, 4, 7, 32), 2), ((1, 3, 5, 6), 3)],
                         ids=["smallest", "grouped-query-k", "head-dim-6"])
def test_apply_rotary_matches_reference(q_shape, k_heads, dtype):
    batch, _, seq_len, head_dim = q_shape
    q = _randn(*q_shape, dtype=dtype)
    k = _randn(batch, k_heads, seq_len, head_dim, dtype=dtype, seed=1)
    cos, sin = _rotary_tables(seq_len, head_dim)
    assert_matches_reference(kernels.apply_rotary, reference.apply_rotary, [q, k, cos, sin], dtype)


def test_apply_rotary_reads_transposed_views_and_differentiates_cos_and_sin():
    """The model's q and k are (B, T, nh, hd) views transposed to (B, nh, T, hd); cos and sin may need grads."""
    projection = _randn(2, 6, 3 * 4 * 8, dtype=torch.float32)
    cos, sin = (t.requires_grad_() for t in _rotary_tables(6, 8))

    def split_then_rotate(rotary_fn):
        def run(projection, cos, sin):
            q, k, _ = projection.view(2, 6, 3, 4, 8).unbind(2)
            return rotary_fn(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        return run

    assert_matches_reference(split_then_rotate(kernels.apply_rotary), split_then_rotate(reference.apply_rotary),
                             [projection, cos, sin], torch.float32)


def _cross_entropy_inputs(tokens, hidden, vocab, dtype, ignored_every=0):
    hidden_states = _randn(tokens, hidden, dtype=dtype)
    weight = _randn(vocab, hidden, dtype=dtype, scale=hidden ** -0.5, seed=1)
    target = torch.randint(0, vocab, (tokens,), generator=torch.Generator().manual_seed(2))
    if ignored_every:
        target[::ignored_every] = -100
    return hidden_states, weight, target


def _chunked(chunk_tokens, ignore_index=-100, label_smoothing=0.0):
    """The fused function with a forced chunk size, so small inputs take the multi-chunk path."""
    return lambda h, w, t: FusedLinearCrossEntropyFunction.apply(h, w, t, ignore_index, label_smoothing,
                                                                 chunk_tokens)


def _reference_ce(ignore_index=-100, label_smoothing=0.0):
    return lambda h, w, t: reference.fused_linear_cross_entropy(h, w, t, ignore_index, label_smoothing)


@DTYPES
@pytest.mark.parametrize("tokens, hidden, vocab, chunk_tokens", [
    (1, 16, 10, 1), (37, 48, 1000, 8), (20, 40, 5000, 7)],
    ids=["one-token", "ragged-chunks-vocab-1000", "vocab-over-one-block"])
def test_fused_linear_cross_entropy_matches_reference(tokens, hidden, vocab, chunk_tokens, dtype):
    inputs = _cross_entropy_inputs(tokens, hidden, vocab, dtype, ignored_every=5 if tokens > 1 else 0)
    assert_matches_reference(_chunked(chunk_tokens), _reference_ce(), inputs, dtype)


@DTYPES
def test_fused_linear_cross_entropy_public_function_matches_reference(dtype):
    inputs = _cross_entropy_inputs(24, 32, 300, dtype, ignored_every=4)
    assert_matches_reference(kernels.fused_linear_cross_entropy, _reference_ce(), inputs, dtype)


@DTYPES
def test_fused_linear_cross_entropy_label_smoothing_matches_reference(dtype):
    inputs = _cross_entropy_inputs(30, 24, 777, dtype, ignored_every=3)
    assert_matches_reference(_chunked(8, label_smoothing=0.1), _reference_ce(label_smoothing=0.1), inputs, dtype)


def test_fused_linear_cross_entropy_custom_ignore_index_matches_reference():
    hidden, weight, target = _cross_entropy_inputs(12, 16, 50, torch.float32)
    target[::2] = 0
    assert_matches_reference(_chunked(5, ignore_index=0), _reference_ce(ignore_index=0), [hidden, weight, target],
                             torch.float32)


def test_fused_linear_cross_entropy_with_all_tokens_ignored_is_nan_with_zero_gradients_like_torch():
    hidden, weight, _ = _cross_entropy_inputs(9, 16, 50, torch.float32)
    target = torch.full((9,), -100)
    assert_matches_reference(_chunked(4), _reference_ce(), [hidden, weight, target], torch.float32)
    loss = kernels.fused_linear_cross_entropy(_leaf(hidden), _leaf(weight), target)
    assert torch.isnan(loss)


def test_fused_linear_cross_entropy_under_no_grad_computes_only_the_loss(monkeypatch):
    import importlib

    module = importlib.import_module("autoscale.kernels.fused_linear_cross_entropy")  # `import ... as` gives the function
    launched = []
    forward = module.fused_linear_cross_entropy_forward
    monkeypatch.setattr(module, "fused_linear_cross_entropy_forward",
                        lambda *args, **kwargs: launched.append(kwargs) or forward(*args, **kwargs))
    hidden, weight, target = _cross_entropy_inputs(10, 16, 50, torch.float32, ignored_every=3)
    with torch.no_grad():
        loss = kernels.fused_linear_cross_entropy(hidden, weight, target)
    assert launched == [dict(grad_hidden_wanted=False, grad_weight_wanted=False)]
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, reference.fused_linear_cross_entropy(hidden, weight, target),
                               **TOLERANCES[torch.float32])


def test_fused_linear_cross_entropy_differentiates_weight_alone():
    hidden, weight, target = _cross_entropy_inputs(10, 16, 50, torch.float32)
    assert_matches_reference(_chunked(3), _reference_ce(), [hidden.detach(), weight, target], torch.float32)


def test_fused_linear_cross_entropy_refuses_a_second_backward_through_one_loss():
    hidden, weight, target = _cross_entropy_inputs(6, 16, 50, torch.float32)
    loss = kernels.fused_linear_cross_entropy(hidden, weight, target)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_training_step_with_triton_set_matches_torch_set(preset):
    from autoscale.models import PRESETS
    from autoscale.models.gpt import build_model

    spec = PRESETS[preset]
    torch.manual_seed(0)
    torch_model = build_model(spec, kernels="torch")
    triton_model = build_model(spec, kernels="triton")
    triton_model.load_state_dict(torch_model.state_dict())
    generator = torch.Generator().manual_seed(4)
    tokens, targets = (torch.randint(0, spec.vocab_size, (2, 16), generator=generator) for _ in range(2))
    torch_loss, triton_loss = torch_model(tokens, targets), triton_model(tokens, targets)
    torch_loss.backward()
    triton_loss.backward()
    torch.testing.assert_close(triton_loss, torch_loss, **TOLERANCES[torch.float32])
    for (name, torch_param), triton_param in zip(torch_model.named_parameters(), triton_model.parameters()):
        torch.testing.assert_close(triton_param.grad, torch_param.grad, msg=name, **TOLERANCES[torch.float32])


@pytest.mark.nightly
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::autoscale.kernels._dispatch.KernelFallbackWarning")
@pytest.mark.parametrize("name", ["rms_norm", "swiglu", "fused_linear_cross_entropy"])
def test_compile_set_matches_reference(name):
    """torch.compile on CPU needs a C++ compiler; where it has none the set falls back (and warns)."""
    inputs = {"rms_norm": lambda: [_randn(4, 8, 64, dtype=torch.float32), _randn(64, dtype=torch.float32, seed=1)],
              "swiglu": lambda: [_randn(4, 100, dtype=torch.float32), _randn(4, 100, dtype=torch.float32, seed=1)],
              "fused_linear_cross_entropy": lambda: list(_cross_entropy_inputs(16, 32, 100, torch.float32, 4))}
    compiled = getattr(get_kernel_set("compile"), name)
    assert_matches_reference(compiled, getattr(reference, name), inputs[name](), torch.float32)
