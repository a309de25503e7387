"""How the kernel sets are found and how a kernel that can't serve a call falls back: once, loudly, correctly."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import autoscale.kernels as kernels  # noqa: E402
from autoscale.kernels import get_kernel_set, kernel_set_names, reference  # noqa: E402
from autoscale.kernels._dispatch import KernelFallbackWarning, reset_fallback_warnings, unsupported_reason  # noqa: E402

pytest.importorskip("triton", reason="the Triton kernels need triton (the interpreter runs them on CPU)")


@pytest.fixture(autouse=True)
def fresh_fallback_warnings():
    reset_fallback_warnings()
    yield
    reset_fallback_warnings()


def _fallback_messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, KernelFallbackWarning)]


def test_registry_names_torch_triton_and_compile_sets():
    assert {"torch", "triton", "compile"} <= set(kernel_set_names())
    triton_set = get_kernel_set("triton")
    assert triton_set.name == "triton"
    assert triton_set.rms_norm is kernels.rms_norm
    assert triton_set.fused_linear_cross_entropy is kernels.fused_linear_cross_entropy


def test_package_exports_the_functions_even_after_their_modules_are_imported():
    import importlib

    module = importlib.import_module("autoscale.kernels.swiglu")
    from autoscale.kernels import apply_rotary, swiglu

    assert swiglu is module.swiglu and callable(swiglu)
    assert apply_rotary is sys.modules["autoscale.kernels.rotary"].apply_rotary


def test_unsupported_dtype_falls_back_to_reference_and_warns_once():
    x, weight = torch.randn(3, 8, dtype=torch.float64), torch.rand(8, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = kernels.rms_norm(x, weight)
        second = kernels.rms_norm(x, weight)
    assert _fallback_messages(record) == [
        "kernels: rms_norm falls back to the torch reference: dtype torch.float64 is not supported"]
    torch.testing.assert_close(first, reference.rms_norm(x, weight), rtol=0, atol=0)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_each_new_fallback_reason_warns_again():
    q = torch.randn(1, 2, 3, 5)
    cos = sin = torch.randn(3, 5)
    with pytest.warns(KernelFallbackWarning, match="head_dim is odd"):
        out_q, _ = kernels.apply_rotary(q, q, cos, sin)
    torch.testing.assert_close(out_q, reference.apply_rotary(q, q, cos, sin)[0], rtol=0, atol=0)
    with pytest.warns(KernelFallbackWarning, match="float64"):
        kernels.gelu(torch.randn(4, dtype=torch.float64))


def test_cpu_tensors_without_the_interpreter_are_a_fallback_reason():
    x = torch.randn(2, 4)
    assert "TRITON_INTERPRET" in unsupported_reason((x,), interpreted=False)
    assert unsupported_reason((x,), interpreted=True) is None
    assert "float64" in unsupported_reason((x.double(),), interpreted=True)


def test_compile_set_falls_back_and_warns_when_torch_compile_fails(monkeypatch):
    from autoscale.kernels.compiled import compiled_functions

    def broken_compile(fn):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled = compiled_functions()
    x = torch.randn(3, 6)
    with pytest.warns(KernelFallbackWarning, match=r"compile/gelu .*RuntimeError: no C\+\+ compiler found"):
        out = compiled["gelu"](x)
    torch.testing.assert_close(out, reference.gelu(x), rtol=0, atol=0)


def test_without_triton_the_package_imports_and_every_function_falls_back_with_a_warning():
    script = textwrap.dedent("""
        import sys, warnings
        sys.modules["triton"] = None  # as if triton were not installed
        import torch; import autoscale.kernels as kernels
        assert "triton" not in [name for name, module in sys.modules.items() if module is not None]
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out = kernels.get_kernel_set("triton").swiglu(torch.ones(2), torch.ones(2))
        assert [str(w.message) for w in record] == [
            "kernels: swiglu falls back to the torch reference: triton is not installed"], record
        print(out.tolist())
    """)
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(torch.nn.functional.silu(torch.ones(2)).tolist())


def test_importing_the_package_and_the_registry_leaves_triton_unimported():
    script = "import sys; import autoscale.kernels as kernels; kernels.get_kernel_set('torch'); print('triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
