import pytest

from autoscale.ds_config import check_with_deepspeed, to_ds_config
from autoscale.errors import UserError
from autoscale.point import Point


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_stage_and_precision_passes_deepspeeds_parser(stage, precision):
    point = Point(zero_stage=stage, micro_batch=2, grad_accum=4, precision=precision,
                  offload="cpu" if stage else "none")
    config = to_ds_config(point, world_size=2)
    check_with_deepspeed(config)
    assert config["train_batch_size"] == 2 * 4 * 2
    assert config["zero_optimization"]["stage"] == stage
    assert config["bf16"]["enabled"] == (precision == "bf16")
    assert config["fp16"]["enabled"] == (precision == "fp16")


def test_offload_lets_a_torch_optimizer_run_on_the_partitions():
    config = to_ds_config(Point(zero_stage=2, micro_batch=1, grad_accum=1, offload="cpu"), world_size=1)
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_force_ds_cpu_optimizer"] is False


def test_inconsistent_batch_sizes_are_refused():
    config = to_ds_config(Point(zero_stage=0, micro_batch=2, grad_accum=2), world_size=2)
    config["train_batch_size"] = 7
    with pytest.raises(UserError, match="not a multiple"):
        check_with_deepspeed(config)


def test_deepspeed_rejections_become_user_errors():
    config = to_ds_config(Point(zero_stage=0, micro_batch=2, grad_accum=2), world_size=2)
    config["bf16"]["enabled"] = config["fp16"]["enabled"] = True
    with pytest.raises(UserError, match="DeepSpeed rejects"):
        check_with_deepspeed(config)


def test_offload_without_zero_is_not_a_point():
    with pytest.raises(UserError, match="offload needs ZeRO"):
        Point(zero_stage=0, micro_batch=1, grad_accum=1, offload="cpu")
