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


def _variants() -> list[Point]:
    """The default point with each knob set to each of its values (open-ended knobs to 2), where valid."""
    from autoscale.point import KNOBS

    base = {"zero_stage": 1, "micro_batch": 2, "grad_accum": 3}
    points = []
    for knob in KNOBS:
        for value in knob.choices or (2,):
            try:
                points.append(Point(**{**base, knob.name: value}))
            except UserError:  # e.g. a kernel set this machine has not registered
                continue
    return points


@pytest.mark.parametrize("point", _variants(), ids=lambda p: p.short())
def test_every_knob_round_trips_through_a_ds_config_or_is_refused_by_name(point):
    from autoscale.ds_config import DS_CONFIG_KNOBS, from_ds_config, unexpressed

    world_size = 2 * point.model_parallel
    if unexpressed(point) is not None:
        knob = next(k for k, v in point.as_dict().items() if v != getattr(Point(), k) and k not in
                    ("zero_stage", "micro_batch", "grad_accum"))
        with pytest.raises(UserError, match=rf"{knob} \(--{knob.replace('_', '-')}\)"):
            to_ds_config(point, world_size=world_size)
        return
    model_knobs = {k: v for k, v in point.as_dict().items() if k not in DS_CONFIG_KNOBS}
    recovered, recovered_world = from_ds_config(to_ds_config(point, world_size=world_size), model_knobs=model_knobs)
    assert recovered == point and recovered_world == world_size


def test_knobs_a_ds_config_holds_cannot_also_be_given_beside_it():
    from autoscale.ds_config import from_ds_config

    config = to_ds_config(Point(zero_stage=2, micro_batch=2, grad_accum=1), world_size=2)
    with pytest.raises(UserError, match="zero_stage come from the ds_config"):
        from_ds_config(config, model_knobs={"zero_stage": 1})
