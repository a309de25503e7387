from autoscale.models.presets import PRESETS, resolve_model
from autoscale.models.spec import ModelSpec

__all__ = ["PRESETS", "ModelSpec", "resolve_model"]
