"""Collective costs: the latency-bandwidth (alpha-beta) model of ring algorithms.

Thakur, Rabenseifner and Gropp 2005, "Optimization of Collective Communication Operations in
MPICH", Sec. 4 (ring all-gather and reduce-scatter: (n-1) steps of B/n bytes; all-reduce as
reduce-scatter then all-gather), which is also NCCL's ring: an all-reduce moves 2(n-1)/n · B bytes
over each rank's link ("bus bandwidth", NCCL tests' PERFORMANCE.md). An all-reduce's latency term
is the ring's 2(n-1) steps up to a few ranks and a tree's 2·log2(n) beyond (NCCL picks the double
binary tree for all-reduce at scale; Sanders, Speck and Träff 2009); NCCL has no tree for
all-gather and reduce-scatter, whose rings pay n-1 steps, so ZeRO-3's gathers slow down with the
number of ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Link:
    """One rank's link for a collective: bandwidth in bytes/s (one direction) and per-step latency."""

    bytes_per_s: float
    latency_s: float


def latency_steps(ranks: int) -> int:
    """Sequential hops of one all-reduce pass: a ring's n-1, or a tree's way up or down when fewer."""
    return min(ranks - 1, math.ceil(math.log2(ranks)))


def all_reduce_s(size_bytes: float, ranks: int, link: Link) -> float:
    """Ring all-reduce of a `size_bytes` buffer: 2(n-1) steps, 2(n-1)/n · B / bw."""
    if ranks <= 1 or size_bytes <= 0:
        return 0.0
    return 2 * latency_steps(ranks) * link.latency_s + 2 * (ranks - 1) / ranks * size_bytes / link.bytes_per_s


def reduce_scatter_s(size_bytes: float, ranks: int, link: Link) -> float:
    """Ring reduce-scatter of a `size_bytes` buffer (each rank keeps 1/n): (n-1)/n · B / bw."""
    if ranks <= 1 or size_bytes <= 0:
        return 0.0
    return (ranks - 1) * link.latency_s + (ranks - 1) / ranks * size_bytes / link.bytes_per_s


def all_gather_s(size_bytes: float, ranks: int, link: Link) -> float:
    """Ring all-gather producing a `size_bytes` buffer: the mirror of reduce-scatter."""
    return reduce_scatter_s(size_bytes, ranks, link)


def all_to_all_s(size_bytes: float, ranks: int, link: Link) -> float:
    """All-to-all of a `size_bytes` buffer per rank (Ulysses' head/sequence exchange, Jacobs et al.
    2023 Sec. 3): each rank keeps 1/n and sends (n-1)/n · B."""
    return reduce_scatter_s(size_bytes, ranks, link)


def send_s(size_bytes: float, link: Link) -> float:
    """Point-to-point transfer (pipeline activations and their gradients)."""
    if size_bytes <= 0:
        return 0.0
    return link.latency_s + size_bytes / link.bytes_per_s
