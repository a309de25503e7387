"""Two lines in a user's training script let autoscale measure it:

    from autoscale import probe
    ...
    probe.step(tokens=tokens_this_rank_trained_on, loss=loss)   # after each optimizer step

Outside an autoscale trial (no AUTOSCALE_PROBE_DIR in the environment) `step` does nothing. Inside
one it appends a line per optimizer step to `probe.rank<r>.jsonl` in the trial's folder: the
monotonic clock, the tokens this rank trained on in the step, the loss if given, and the rank's
peak memory so far. The launcher turns the lines into the trial's result (`engine.script`).

Kept free of heavy imports: it reads torch's allocator only when the script has imported torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

PROBE_DIR_ENV = "AUTOSCALE_PROBE_DIR"
_STATUS = Path("/proc/self/status")


def probe_path(directory: Path, rank: int) -> Path:
    return Path(directory) / f"probe.rank{rank}.jsonl"


def resident_peak_bytes() -> int:
    """This process's peak resident set, the kernel's high-water mark (VmHWM, proc(5))."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_bytes() -> int:
    """CUDA: the caching allocator's peak reserved bytes; otherwise the peak resident set."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_reserved())
    return resident_peak_bytes()


def step(*, tokens: int, loss: float | None = None) -> None:
    """Record one optimizer step of this rank: `tokens` it trained on in the step, its `loss` (optional)."""
    directory = os.environ.get(PROBE_DIR_ENV)
    if not directory:
        return
    record = {"t": time.perf_counter(), "time": time.time(), "tokens": int(tokens),
              "loss": None if loss is None else float(loss), "peak_bytes": peak_bytes()}
    with open(probe_path(Path(directory), int(os.environ.get("RANK", "0"))), "a") as out:
        out.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict]:
    """A rank's records; a last line cut short by a killed rank is left out."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records
