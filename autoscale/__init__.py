"""autoscale: find the fastest correct DeepSpeed training configuration, and keep it fast."""

__version__ = "0.1.0"
