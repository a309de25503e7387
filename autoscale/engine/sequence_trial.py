"""What a trial does for a sequence-parallel point (`Point.sp`, DeepSpeed-Ulysses) beside the model.

The model's half is `models.sequence_parallel`; here is the trial's: the groups, the batch slices
and the loss. DeepSpeed 0.19.8 (read from its source, checked by the gate's tests):
- `parallel_state_sp.initialize_sequence_parallel(sp)` builds sequence groups of `sp` consecutive
  ranks and one sequence-data-parallel group of every rank; passed as `mpu=` to
  `deepspeed.initialize`, it makes ZeRO partition and reduce over that whole group. Without it
  DeepSpeed knows no sequence group (`"sequence_parallel_size"` in the config alone only changes
  the batch-size check) and averages gradients over every rank as if each were a replica: half
  the gradient at sp 2 with the loss scaled for ZeRO 0-2's sum, right by accident at ZeRO-3.
- ZeRO 0, 1 and 2 divide the reduced gradients by world / sp, that is they sum over the ranks of a
  sequence group and average over replicas (`engine._reduce_non_expert_gradients`,
  `stage_1_and_2`'s `average_tensor`); ZeRO-3's reduce-scatter (`reduce_scatter`, on by default)
  divides by the whole world, averaging over sequence ranks too (`stage3.__avg_scatter_grads`), and
  its contiguous-bucket path (`reduce_scatter` false) sums like ZeRO 0-2. Each rank's loss is the
  mean over its slice, so the replica's loss is their mean: backward takes `loss / sp` where
  DeepSpeed sums and `loss` where it averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoscale.models.sequence_parallel import WHOLE_SEQUENCE, SequenceSplit
from autoscale.point import Point

def sums_over_sequence_ranks(config: dict) -> bool:
    """Whether DeepSpeed sums gradients over a sequence group (else it averages), for this config."""
    zero = config.get("zero_optimization") or {}
    return zero.get("stage", 0) < 3 or not zero.get("reduce_scatter", True)


@dataclass(frozen=True)
class SequenceTrial:
    """This rank's part in splitting sequences: the model's split, DeepSpeed's mpu, and the loss scale."""

    split: SequenceSplit = WHOLE_SEQUENCE
    mpu: object | None = None  # the `parallel_state_sp` module, for deepspeed.initialize
    backward_scale: float = 1.0

    def local(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of a micro-batch's full-length (B, T) inputs and targets."""
        if self.split.size == 1:
            return inputs, targets
        if inputs.shape[1] % self.split.size:  # layout.check_layout's rule, for a request that skipped it
            raise ValueError(f"sp {self.split.size} does not divide the sequence length {inputs.shape[1]}")
        local_len = inputs.shape[1] // self.split.size
        first = self.split.first_position(local_len)
        return inputs[:, first:first + local_len], targets[:, first:first + local_len]

    def for_backward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.backward_scale if self.backward_scale != 1.0 else loss

    def replica_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The mean loss over the replica's whole sequences, from this rank's mean over its slice."""
        if self.split.size == 1:
            return loss
        import torch.distributed as dist

        total = loss.detach().clone()
        dist.all_reduce(total, group=self.split.group)
        return total / self.split.size


def sequence_trial(point: Point, config: dict, *, fault: str | None = None) -> SequenceTrial:
    """Build the sequence groups for `point` (every rank calls it) and say how this rank trains.
    `fault` (test-only, `request.FAULTS`) gets Ulysses silently wrong for the gate to catch:
    "sp_without_mpu" keeps the groups from DeepSpeed, "sp_wrong_loss_scale" scales backward's loss
    as the other ZeRO stages need."""
    if point.sp == 1:
        return SequenceTrial()
    from deepspeed.runtime.sequence_parallel import parallel_state_sp

    parallel_state_sp.initialize_sequence_parallel(point.sp)
    split = SequenceSplit(group=parallel_state_sp.get_sequence_parallel_group(),
                          rank=parallel_state_sp.get_sequence_parallel_rank(), size=point.sp)
    sums = sums_over_sequence_ranks(config) != (fault == "sp_wrong_loss_scale")
    return SequenceTrial(split=split, mpu=None if fault == "sp_without_mpu" else parallel_state_sp,
                         backward_scale=1.0 / point.sp if sums else 1.0)
