import pytest

from autoscale.errors import UserError
from autoscale.space import load_space


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_builtin_spaces_load_by_name():
    default = load_space("default")
    assert default.choices["zero_stage"] == (0, 1, 2, 3)
    zero_only = load_space("zero-only")
    assert zero_only.choices["precision"] == ("fp32",) and zero_only.choices["offload"] == ("none",)


def test_points_hold_the_global_batch_fixed():
    space = load_space("default")
    points = space.points(global_batch=16, world_size=2)
    assert points and all(p.micro_batch * p.grad_accum * 2 == 16 for p in points)
    assert not any(p.offload != "none" and p.zero_stage == 0 for p in points)


def test_micro_batches_that_cannot_make_the_global_batch_are_dropped():
    space = load_space("default").for_backend("cpu", global_batch=4, world_size=2)
    assert space.choices["micro_batch"] == (1, 2)
    assert "fp16" not in space.choices["precision"]


@pytest.mark.parametrize("text, message", [
    ("zero_stage: [0, 1]\nbogus: [1]\n", "bogus: Extra inputs are not permitted"),
    ("zero_stage: []\n", "zero_stage: List should have at least 1 item"),
    ("zero_stage: [4]\n", "zero_stage.0: Input should be 0, 1, 2 or 3"),
    ("micro_batch: [0]\n", "micro_batch.0: Input should be greater than 0"),
    ("micro_batch: ['2']\n", "micro_batch.0: Input should be a valid integer"),
    ("precision: [fp64]\n", "precision.0: Input should be 'fp32', 'bf16', 'fp16' or 'fp8'"),
    ("kernels: [cuda-magic]\n", "unknown kernel set 'cuda-magic'"),
    ("zero_stage: [0\n", "not valid YAML"),
    ("- 1\n- 2\n", "must be a mapping"),
])
def test_bad_space_files_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_space(write(tmp_path, text))


def test_missing_space_lists_the_builtin_ones():
    with pytest.raises(UserError, match="not found.*default.*zero-only"):
        load_space("no-such-space")


def test_impossible_global_batch_is_refused():
    with pytest.raises(UserError, match="no point of space .* can be laid out for global batch 3"):
        load_space("zero-only").for_backend("cpu", global_batch=3, world_size=2)


def test_fp16_only_space_is_refused_on_cpu(tmp_path):
    with pytest.raises(UserError, match="no precision choice"):
        load_space(write(tmp_path, "precision: [fp16]\n")).for_backend("cpu", global_batch=4, world_size=2)


def test_triton_kernels_are_measured_on_cpu_only_under_the_interpreter(tmp_path, monkeypatch):
    from autoscale.space import dropped_choices

    space = load_space(write(tmp_path, "kernels: [torch, triton]\n"))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    prepared = space.for_backend("cpu", global_batch=4, world_size=2)
    assert prepared.choices["kernels"] == ("torch",)
    assert dropped_choices(space, prepared) == ["kernels triton"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert space.for_backend("cpu", global_batch=4, world_size=2).choices["kernels"] == ("torch", "triton")
