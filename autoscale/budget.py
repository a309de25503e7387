"""Memory per rank, under one name per figure: the device's share, and the usable bytes after the margin.

`device_bytes` is what one rank has: a GPU's memory, or the host's memory divided among the ranks
that share a CPU. `usable_bytes` is the part a config may fill, `MEMORY_MARGIN` of it, leaving room
for what neither the model nor a measurement sees (allocator fragmentation, a context, another
process). A prediction fits when its peak is within the usable bytes, a measured trial is acceptable
when its measured peak is, and every message says which figure it compared against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoscale.engine.request import TrialResult
    from autoscale.hardware import Hardware

MEMORY_MARGIN = 0.90
"""The share of a rank's memory a config may fill: the cost model's error on measured trials is a
few percent, and an OOM costs a whole trial."""

GIB = 2**30


@dataclass(frozen=True)
class MemoryBudget:
    device_bytes: int  # what one rank has

    @classmethod
    def for_hardware(cls, hardware: "Hardware", world_size: int) -> "MemoryBudget":
        """A GPU's memory per rank, or the host's memory shared by the ranks on a CPU."""
        shared = hardware.name == "cpu"
        return cls(hardware.memory_bytes // world_size if shared else hardware.memory_bytes)

    @property
    def usable_bytes(self) -> int:
        return int(self.device_bytes * MEMORY_MARGIN)

    def cap_bytes(self, backend: str) -> int | None:
        """What a rank's trial may add before its allocations fail (`engine.memcap`): on a CPU its share
        of the host, so a config predicted wrongly fails its own trial; None on a GPU, whose memory is not
        the host's."""
        return self.device_bytes if backend == "cpu" else None

    def fits(self, peak_bytes: float) -> bool:
        return peak_bytes <= self.usable_bytes

    def against(self, peak_bytes: float) -> str:
        """`peak_bytes` against what it is compared to, for messages: "12.0 GiB against 9.0 GiB usable (90% of 10.0 GiB)"."""
        return (f"{peak_bytes / GIB:.1f} GiB against {self.usable_bytes / GIB:.1f} GiB usable "
                f"({MEMORY_MARGIN:.0%} of {self.device_bytes / GIB:.1f} GiB)")


def within(peak_bytes: float | None, usable_bytes: int | None) -> bool:
    """A measured peak within the usable bytes; an unknown peak or no limit counts as within."""
    return usable_bytes is None or peak_bytes is None or peak_bytes <= usable_bytes


def acceptable(result: "TrialResult | None", usable_bytes: int | None) -> bool:
    """Ran, measured a throughput, and stayed within the usable memory: a config the tuner may
    recommend. A trial that ran past the margin is no answer, however fast."""
    return (result is not None and result.ok and bool(result.tokens_per_s)
            and within(result.peak_bytes, usable_bytes))
