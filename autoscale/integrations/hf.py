"""`AutoscaleCallback`: the probe for Hugging Face Trainer scripts.

    trainer = Trainer(..., callbacks=[AutoscaleCallback(tokens_per_sample=seq_len)])

Trainer calls `on_step_end` after each optimizer step; the callback records the tokens this rank
trained on in that step (per-device batch x gradient accumulation x tokens per sample). Trainer's
loss reaches callbacks only at logging steps, so no loss is recorded.
"""

from __future__ import annotations

try:
    from transformers import TrainerCallback
except ImportError as error:  # optional dependency: say what is missing at first use
    raise ImportError("AutoscaleCallback needs transformers: pip install transformers") from error

from autoscale import probe


class AutoscaleCallback(TrainerCallback):
    def __init__(self, *, tokens_per_sample: int):
        self.tokens_per_sample = tokens_per_sample

    def on_step_end(self, args, state, control, **kwargs):
        probe.step(tokens=args.per_device_train_batch_size * args.gradient_accumulation_steps
                   * self.tokens_per_sample)
