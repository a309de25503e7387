"""How an exported job is started on its nodes: `launch.sh` (run once per node) and `sbatch.sh`.

A plan for 512 GPUs is 64 nodes of 8, not one node of 512, so every launcher line names the node
count and the processes per node, and the nodes meet at node 0's address:
- torchrun (`torch.distributed.run`): `--nnodes N --nproc_per_node G --rdzv_backend c10d
  --rdzv_endpoint ADDR:PORT --rdzv_id ID`; the c10d rendezvous numbers the nodes itself;
- the `deepspeed` launcher: a hostfile (slot counts per node) with `--no_ssh --node_rank R`, so
  each node starts its own ranks as with torchrun instead of node 0 reaching the others by pdsh;
- `accelerate launch`: `num_machines`/`num_processes` in its YAML, `--machine_rank`,
  `--main_process_ip`, `--main_process_port` on the command line.

`launch.sh` reads NODE_RANK (else Slurm's SLURM_NODEID, else 0), MASTER_ADDR (required when the job
spans nodes) and MASTER_PORT (default 29500), resolves $TRAIN_SCRIPT, and runs from its own folder,
so the exported files name each other by relative paths and the folder can be copied anywhere.
`sbatch.sh` asks Slurm for the nodes and runs `launch.sh` once per node with srun.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from autoscale.errors import UserError

DEFAULT_PORT = 29500


class Expanded(str):
    """A word of a launch command that the shell expands when `launch.sh` runs (`$MASTER_ADDR`)."""


TRAIN_SCRIPT = Expanded("$TRAIN_SCRIPT")  # the user's training script, resolved by launch.sh
NODE_RANK, MASTER_ADDR, MASTER_PORT = Expanded("$NODE_RANK"), Expanded("$MASTER_ADDR"), Expanded("$MASTER_PORT")
RDZV_ENDPOINT, RDZV_ID = Expanded("$MASTER_ADDR:$MASTER_PORT"), Expanded("$RDZV_ID")


def shell_word(word: str) -> str:
    return f'"{word}"' if isinstance(word, Expanded) else shlex.quote(word)


def shell_line(command: list[str]) -> str:
    return " ".join(shell_word(word) for word in command)


@dataclass(frozen=True)
class Cluster:
    """The nodes a job of `world_size` ranks spans, `gpus_per_node` ranks on each."""

    nodes: int
    gpus_per_node: int

    @classmethod
    def for_world(cls, world_size: int, gpus_per_node: int) -> "Cluster":
        per_node = min(gpus_per_node, world_size)
        if per_node < 1 or world_size % per_node:
            raise UserError(f"{world_size} ranks do not fill nodes of {gpus_per_node} GPUs: "
                            "give --gpus-per-node a divisor of the world size")
        return cls(nodes=world_size // per_node, gpus_per_node=per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        return f"{self.nodes} node(s) x {self.gpus_per_node} process(es)"


def torchrun(cluster: Cluster) -> list[str]:
    """torchrun's launcher words before the script (`torch.distributed.run.get_args_parser`)."""
    return ["torchrun", "--nnodes", str(cluster.nodes), "--nproc_per_node", str(cluster.gpus_per_node),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", RDZV_ENDPOINT, "--rdzv_id", RDZV_ID]


HOSTFILE = "hostfile"


def deepspeed(cluster: Cluster) -> list[str]:
    """The `deepspeed` launcher's words before the script (`deepspeed.launcher.runner.parse_args`)."""
    words = ["deepspeed"]
    if cluster.nodes > 1:
        words += ["--hostfile", HOSTFILE, "--no_ssh", "--node_rank", NODE_RANK, "--master_addr", MASTER_ADDR,
                  "--num_nodes", str(cluster.nodes)]
    return words + ["--num_gpus", str(cluster.gpus_per_node), "--master_port", MASTER_PORT]


def hostfile(cluster: Cluster, header: str) -> str:
    """DeepSpeed's hostfile: one line per node with its slots. Under --no_ssh only the counts are
    read (each node starts its own ranks), so the names are placeholders."""
    return (header + "# DeepSpeed hostfile: with --no_ssh each node runs launch.sh itself; only the slot counts matter\n"
            + "".join(f"node-{rank} slots={cluster.gpus_per_node}\n" for rank in range(cluster.nodes)))


def accelerate_machine(cluster: Cluster) -> dict:
    """The Accelerate config keys saying how many machines and processes (all machines together)."""
    machine = {"num_machines": cluster.nodes, "machine_rank": 0, "num_processes": cluster.world_size}
    if cluster.nodes > 1:
        machine |= {"rdzv_backend": "static", "same_network": True}
    return machine


def accelerate(config_file: str) -> list[str]:
    return ["accelerate", "launch", "--config_file", config_file, "--machine_rank", NODE_RANK,
            "--main_process_ip", MASTER_ADDR, "--main_process_port", MASTER_PORT]


def launch_script(command: list[str], cluster: Cluster, header: str, *, uses_train_script: bool = True) -> str:
    """`launch.sh`: run it on every node (NODE_RANK 0..nodes-1), or let `sbatch.sh` do so."""
    lines = ["#!/bin/sh", header.rstrip("\n"),
             f"# {cluster.describe()}: run this once on each node"
             + (" with NODE_RANK=0..{} and MASTER_ADDR=<node 0's address>".format(cluster.nodes - 1)
                if cluster.nodes > 1 else "") + "; under Slurm, sbatch sbatch.sh",
             "set -e"]
    if uses_train_script:
        lines += ['TRAIN_SCRIPT="${TRAIN_SCRIPT:-train.py}"',
                  '[ -f "$TRAIN_SCRIPT" ] || { echo "launch.sh: no training script $TRAIN_SCRIPT here; '
                  'run it as TRAIN_SCRIPT=path/to/yours.py sh launch.sh" >&2; exit 2; }',
                  'TRAIN_SCRIPT="$(cd "$(dirname "$TRAIN_SCRIPT")" && pwd)/$(basename "$TRAIN_SCRIPT")"']
    lines += ['NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"', f'MASTER_PORT="${{MASTER_PORT:-{DEFAULT_PORT}}}"',
              'RDZV_ID="${RDZV_ID:-${SLURM_JOB_ID:-autoscale}}"']
    if cluster.nodes > 1:
        lines.append(f'[ -n "$MASTER_ADDR" ] || {{ echo "launch.sh: set MASTER_ADDR to node 0\'s address '
                     f'(this job spans {cluster.nodes} nodes)" >&2; exit 2; }}')
    else:
        lines.append('MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"')
    lines += ['cd "$(dirname "$0")"', "exec " + shell_line(command)]
    return "\n".join(lines) + "\n"


def sbatch_script(cluster: Cluster, header: str, job_name: str, *, uses_train_script: bool = True) -> str:
    """`sbatch.sh`: one task per node, each running launch.sh, which starts that node's ranks."""
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={cluster.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={cluster.gpus_per_node}",
        header.rstrip("\n"),
        "# submit from this folder: " + ("TRAIN_SCRIPT=path/to/yours.py sbatch sbatch.sh" if uses_train_script
                                          else "sbatch sbatch.sh"),
        "set -e",
        '[ -f launch.sh ] || { echo "sbatch.sh: submit it from its own folder (cd <folder> && sbatch sbatch.sh)" >&2; '
        "exit 2; }",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export MASTER_PORT="${{MASTER_PORT:-{DEFAULT_PORT}}}"',
        f"srun --nodes={cluster.nodes} --ntasks-per-node=1 sh launch.sh",
    ]) + "\n"
