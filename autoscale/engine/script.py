"""A user's training script as a trial's workload: its command, its ds_config, and its result.

The ranks are started by the fresh launcher (`engine.launch`) like autoscale's own; what differs is
what each rank runs (`ScriptWorkload.command`) and where the figures come from:

- the probe (`autoscale.probe`): one record per optimizer step and rank. The first
  `MeasurePolicy.warmup_steps` steps are warm-up; tokens/s is the tokens of every rank's later
  steps over the time they took, the step time is rank 0's;
- without it, DeepSpeed's own throughput timer (`deepspeed.utils.timer.ThroughputTimer`), which
  rank 0's engine logs after every optimizer step when `steps_per_print` is 1 and DeepSpeed's
  `log_level` is info ("...global_step=N, RunningAvgSamplesPerSec=..., CurrSamplesPerSec=X,
  MemAllocated=..., MaxMemAllocated=YGB"); the trial's ds_config sets both. It times forward start
  to step end from global step 3 on. Samples become tokens with the study's --seq-len, and the peak is
  rank 0's, as DeepSpeed reports it (GB, two decimals: on CPU its sampled resident set).

A script that exits non-zero fails the trial with the last line of its log as the reason.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from pathlib import Path

from autoscale.engine.measure import relative_standard_error
from autoscale.engine.outcome import last_line, mentions_oom, reason_from_signal
from autoscale.engine.request import MeasurePolicy, TrialRequest, TrialResult
from autoscale.probe import probe_path, read_records

THROUGHPUT_LINE = re.compile(r"global_step=(\d+), RunningAvgSamplesPerSec=\S+, CurrSamplesPerSec=([0-9.eE+-]+), "
                             r"MemAllocated=\S+, MaxMemAllocated=([0-9.eE+-]+)GB")


def script_ds_config(config: dict) -> dict:
    """The trial's ds_config as a script gets it: DeepSpeed logs its step timing after every step."""
    return {**config, "steps_per_print": 1, "log_level": "info"}


def probe_summary(records_by_rank: list[list[dict]], policy: MeasurePolicy, *, launch_time: float) -> dict | None:
    """The trial's figures from the probe's records, or None when rank 0 recorded too few steps to time."""
    warmup = policy.warmup_steps
    timed = [records[warmup:] for records in records_by_rank]
    if len(timed[0]) < 2:
        return None
    step_times = [later["t"] - earlier["t"] for earlier, later in zip(timed[0], timed[0][1:])]
    tokens_per_s = sum(sum(r["tokens"] for r in records[1:]) / (records[-1]["t"] - records[0]["t"])
                       for records in timed if len(records) >= 2)
    peaks = [max(r["peak_bytes"] for r in records) for records in records_by_rank if records]
    return dict(status="ok", tokens_per_s=tokens_per_s, peak_bytes=max(peaks), peak_bytes_per_rank=tuple(peaks),
                loss=records_by_rank[0][-1]["loss"], steps=len(step_times), step_s=statistics.median(step_times),
                step_rse=relative_standard_error(step_times) if len(step_times) > 1 else None,
                launch_s=records_by_rank[0][0]["time"] - launch_time)


def deepspeed_log_summary(log: str, policy: MeasurePolicy, *, global_batch: int, seq_len: int) -> dict | None:
    """The trial's figures from rank 0's DeepSpeed throughput lines, or None when fewer than two timed steps."""
    steps = [(int(step), float(samples_per_s), float(max_gb)) for step, samples_per_s, max_gb
             in THROUGHPUT_LINE.findall(log) if int(step) > policy.warmup_steps]
    if len(steps) < 2:
        return None
    step_times = [global_batch / samples_per_s for _, samples_per_s, _ in steps]
    samples_per_s = global_batch * len(step_times) / sum(step_times)
    peak = int(max(max_gb for *_, max_gb in steps) * 1024**3)
    return dict(status="ok", tokens_per_s=samples_per_s * seq_len, samples_per_s=samples_per_s, peak_bytes=peak,
                peak_bytes_per_rank=(peak,), steps=len(step_times), step_s=statistics.median(step_times),
                step_rse=relative_standard_error(step_times))


def script_result(request: TrialRequest, processes: list[subprocess.Popen], *, wall_s: float,
                  launch_time: float) -> TrialResult:
    """The trial's result once every rank has exited: failed with the script's own last words, else measured."""
    workdir = request.workdir
    failure = script_failure_reason(workdir, processes)
    if failure is not None:
        return TrialResult.failed(failure, wall_s=wall_s)
    paths = [probe_path(workdir, rank) for rank in range(request.nproc)]
    if paths[0].exists():
        figures = probe_summary([read_records(p) if p.exists() else [] for p in paths], request.measure,
                                launch_time=launch_time)
        missing = f"the probe recorded fewer than {request.measure.warmup_steps + 2} steps on rank 0"
    elif request.seq_len is None:
        return TrialResult.failed("crash: no probe records, and DeepSpeed's samples/s need --seq-len to become "
                                  "tokens/s: add `probe.step(tokens=...)` after each optimizer step", wall_s=wall_s)
    else:
        figures = deepspeed_log_summary((workdir / "rank0.log").read_text(errors="replace"), request.measure,
                                        global_batch=request.point.global_batch(request.nproc),
                                        seq_len=request.seq_len)
        missing = (f"no probe records and fewer than {request.measure.warmup_steps + 2} steps timed by DeepSpeed "
                   "in rank0.log: add `probe.step(tokens=...)` after each optimizer step")
    if figures is None:
        return TrialResult.failed(f"crash: {missing}", wall_s=wall_s)
    return TrialResult.from_dict({**figures, "wall_s": wall_s})


def script_failure_reason(workdir: Path, processes: list[subprocess.Popen]) -> str | None:
    """None when every rank exited 0. Else the first rank that exited by itself with an error, and the
    last line of its log; ranks killed by a signal come after, since the launcher kills the rest."""
    codes = [p.returncode for p in processes]
    if all(code == 0 for code in codes):
        return None
    for rank, code in enumerate(codes):
        if code is not None and code > 0:
            line = last_line(workdir / f"rank{rank}.log")
            kind = "oom" if mentions_oom(line) else "crash"
            return f"{kind}: rank{rank} exited with code {code}: {line}"
    rank, code = next((rank, code) for rank, code in enumerate(codes) if code != 0)
    return reason_from_signal(rank, -code) if code is not None else f"crash: rank{rank} did not exit"
