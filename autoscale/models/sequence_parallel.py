"""How the transformer splits each sequence over a group of ranks: DeepSpeed-Ulysses (Jacobs et al.
2023, "DeepSpeed Ulysses", Sec. 3).

Every rank of a sequence-parallel group holds the whole model and a contiguous slice of T/sp tokens
of the same samples. Everything but attention is per token, so it runs on the slice as it is; the
only changes are where the slice's positions start (rotary tables and learned position embeddings
are read at the slice's offset) and attention, which must see every token: DeepSpeed's
`DistributedAttention` all-to-alls q, k and v from (B, T/sp, heads, hd) to (B, T, heads/sp, hd),
the local core attends over whole sequences for its share of heads, and a last all-to-all brings
the output back to the slice. So heads and key-value heads must divide by sp (`layout.check_layout`).

Each rank's loss is the mean over its slice; equal slices make the mean of those the replica's mean.
A model is built with `WHOLE_SEQUENCE` (no split) or a `SequenceSplit` of a process group, chosen
at build time like the kernel set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""Causal attention of q (B, nh, T, hd) over k, v (B, nkv, T, hd): the output (B, nh, T, hd)."""


@dataclass(frozen=True)
class SequenceSplit:
    """This rank's place in a sequence-parallel group: ranks `rank` of `size` in `group`."""

    group: Any  # a torch.distributed process group
    rank: int
    size: int

    def first_position(self, local_len: int) -> int:
        """The position of this rank's first token, its slice being `local_len` tokens long."""
        return self.rank * local_len

    def attention(self, core: AttentionCore) -> nn.Module | AttentionCore:
        return UlyssesAttention(core, self.group) if self.size > 1 else core


WHOLE_SEQUENCE = SequenceSplit(group=None, rank=0, size=1)


class UlyssesAttention(nn.Module):
    """`core` over whole sequences on this rank's share of heads, for q, k, v of this rank's slice.

    DeepSpeed's exchange works on (B, T, heads, hd) with batch_dim_idx 0: scatter_idx 2 splits the
    heads and gather_idx 1 joins the sequence on the way in, and the reverse on the way out. Its
    query and key-value heads are split in contiguous blocks, so grouped-query attention's query
    head i still lands beside key-value head i // (nh / nkv)."""

    def __init__(self, core: AttentionCore, group) -> None:
        super().__init__()
        from deepspeed.sequence.layer import DistributedAttention

        self.core = core
        self.exchange = DistributedAttention(self._attend_whole_sequences, group, scatter_idx=2, gather_idx=1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # (B, nh, T/sp, hd) in and out; (B, T/sp, nh, hd) through the exchange
        y = self.exchange(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0)
        return y.transpose(1, 2)

    def _attend_whole_sequences(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # (B, T, nh/sp, hd) in and out
        return self.core(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
