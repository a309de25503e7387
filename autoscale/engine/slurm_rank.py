"""One srun task of a trial: from Slurm's environment to torch.distributed's, then the usual rank.

srun starts `python -m autoscale.engine.slurm_rank REQUEST RESULT` once per task. Each task knows
its place only through Slurm's variables (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, the step's
node list), so they are turned into RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR (the step's first
node) before `autoscale.engine.rank` runs. MASTER_PORT comes from the launcher. Task 0 also writes
the step's id beside the request, so a launcher that must stop the trial can `scancel` exactly it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping

STEP_FILE = "slurm-step"  # JOBID.STEPID of the trial's job step, written by task 0
SCONTROL_TIMEOUT_S = 30


def first_host(nodelist: str) -> str:
    """The first node of a Slurm node list (`gpu[01-04]` -> `gpu01`), as `scontrol show hostnames` expands it."""
    expanded = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                              check=True, timeout=SCONTROL_TIMEOUT_S).stdout.split()
    if not expanded:
        raise RuntimeError(f"scontrol show hostnames {nodelist!r} named no host")
    return expanded[0]


def torch_environment(slurm: Mapping[str, str], *, expand: Callable[[str], str] = first_host) -> dict[str, str]:
    """RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR of this task, from its SLURM_* variables."""
    nodelist = slurm.get("SLURM_STEP_NODELIST") or slurm["SLURM_JOB_NODELIST"]
    world_size = slurm.get("SLURM_STEP_NUM_TASKS") or slurm["SLURM_NTASKS"]
    return {"RANK": slurm["SLURM_PROCID"], "LOCAL_RANK": slurm["SLURM_LOCALID"], "WORLD_SIZE": world_size,
            "MASTER_ADDR": expand(nodelist)}


def step_id(slurm: Mapping[str, str]) -> str:
    return f"{slurm['SLURM_JOB_ID']}.{slurm['SLURM_STEP_ID']}"


def main(argv: list[str]) -> int:
    from autoscale.engine import rank

    if os.environ["SLURM_PROCID"] == "0":
        (Path(argv[0]).parent / STEP_FILE).write_text(step_id(os.environ))
    os.environ.update(torch_environment(os.environ))
    return rank.main(argv)


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # as autoscale.engine.rank: skip gloo's teardown
