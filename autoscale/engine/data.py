"""The synthetic token stream every trial trains on, in an order no layout can change.

Sample `i` of the run is drawn from its own generator seeded by (seed, i), and the samples of
optimizer step `s` are `s * global_batch ... (s + 1) * global_batch - 1`, dealt out by
data-parallel rank and micro-step. So a trial on 2 ranks with accumulation 4 and one on 4 ranks
with accumulation 2 train on the same global batches, which is what lets the numerics gate
(`autoscale.engine.numerics`) compare their losses with a reference run's. Ranks that share a
replica (tensor parallel) pass the same data-parallel rank and so get the same batch.
"""

from __future__ import annotations

import torch

SEED_STRIDE = 1 << 40  # samples per seed before two seeds' streams could share a generator seed


def sample_tokens(global_index: int, *, seed: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """Sample `global_index` of the stream: seq_len + 1 tokens (inputs and their next-token targets)."""
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + global_index)
    return torch.randint(0, vocab_size, (seq_len + 1,), generator=generator)


def micro_batch_tokens(*, step: int, micro_step: int, data_parallel_rank: int, data_parallel: int,
                       micro_batch: int, grad_accum: int, seed: int, seq_len: int,
                       vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (micro_batch, seq_len) of one rank's micro-step of optimizer step `step`."""
    global_batch = micro_batch * grad_accum * data_parallel
    first = step * global_batch + (micro_step * data_parallel + data_parallel_rank) * micro_batch
    tokens = torch.stack([sample_tokens(first + i, seed=seed, seq_len=seq_len, vocab_size=vocab_size)
                          for i in range(micro_batch)])
    return tokens[:, :-1], tokens[:, 1:]
