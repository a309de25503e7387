"""The hardware catalog: what each device can do, read from YAML, plus detection of the local one.

Users add devices with their own YAML file of the same shape (`--hardware path.yaml`). The `cpu`
entry is completed at run time from this machine (cores, clock, memory), since no datasheet fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path


from autoscale.errors import UserError, did_you_mean
from autoscale.userfiles import read_user_yaml

CATALOG = Path(__file__).with_name("catalog.yaml")
GB = 1e9


@dataclass(frozen=True, kw_only=True)
class Hardware:
    name: str
    description: str
    peak_tflops: dict[str, float]  # precision -> dense TFLOP/s per device
    memory_bytes: int
    memory_bandwidth_gb_s: float
    intra_node_gb_s: float
    inter_node_gb_s: float
    gpus_per_node: int
    host_link_gb_s: float = 32.0  # PCIe to the host, one direction (optimizer offload)
    intra_node_latency_us: float = 5.0  # one step of a ring collective inside a node
    inter_node_latency_us: float = 10.0  # one step of a ring collective between nodes
    family: str = ""  # devices sharing a chip share fitted efficiencies (costmodel.params)
    source: str = ""
    match: tuple[str, ...] = field(default=(), compare=False)

    def peak_flops(self, precision: str) -> float:
        """Peak dense FLOP/s for a training precision.

        fp32 training means plain FP32 units: PyTorch does not use TF32 for matmuls unless asked
        (`torch.backends.cuda.matmul.allow_tf32` defaults to False since 1.12). A precision the
        entry does not list (fp16 on a CPU) falls back to fp32; fp8 on a device without fp8 units
        falls back to its 16-bit rate (the matmuls run in bf16).
        """
        table = self.peak_tflops
        if precision == "fp8" and "fp8" not in table:
            precision = "bf16"
        return 1e12 * table.get(precision, table["fp32"])


def _parse_entry(name: str, raw: dict, origin: str) -> Hardware:
    where = f"hardware entry {name!r} in {origin}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: must be a mapping of field to value, got {raw!r}")
    peak = raw.get("peak_tflops")
    if not isinstance(peak, dict) or "fp32" not in peak:
        raise UserError(f"{where}: peak_tflops must map precisions to TFLOP/s, with fp32 among them "
                        f"(e.g. {{fp32: 67, bf16: 989.5}}), got {peak!r}")
    try:
        entry = Hardware(name=name, description=raw.get("description", name),
                        peak_tflops={k: float(v) for k, v in raw["peak_tflops"].items()},
                        memory_bytes=int(float(raw["memory_gb"]) * GB),
                        memory_bandwidth_gb_s=float(raw["memory_bandwidth_gb_s"]),
                        intra_node_gb_s=float(raw["intra_node_gb_s"]),
                        inter_node_gb_s=float(raw["inter_node_gb_s"]),
                        gpus_per_node=int(raw.get("gpus_per_node", 8)),
                        host_link_gb_s=float(raw.get("host_link_gb_s", 32.0)),
                        intra_node_latency_us=float(raw.get("intra_node_latency_us", 5.0)),
                        inter_node_latency_us=float(raw.get("inter_node_latency_us", 10.0)),
                        family=str(raw.get("family", "")),
                        source=raw.get("source", ""), match=tuple(raw.get("match", ())))
    except KeyError as error:
        raise UserError(f"{where}: missing field {error}") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{where}: bad field ({error})") from None
    figures = {"memory_gb": entry.memory_bytes, "memory_bandwidth_gb_s": entry.memory_bandwidth_gb_s,
               "intra_node_gb_s": entry.intra_node_gb_s, "inter_node_gb_s": entry.inter_node_gb_s,
               "host_link_gb_s": entry.host_link_gb_s,
               **{f"peak_tflops.{precision}": value for precision, value in entry.peak_tflops.items()}}
    negative = next((key for key, value in figures.items() if value < 0), None)
    if negative is not None:
        raise UserError(f"{where}: {negative} must not be negative")
    if entry.gpus_per_node < 1:
        raise UserError(f"{where}: gpus_per_node must be at least 1")
    return entry


def load_catalog_file(path: Path) -> dict[str, Hardware]:
    raw = read_user_yaml(path, f"hardware file {str(path)!r}")
    if not isinstance(raw, dict):
        raise UserError(f"hardware file {str(path)!r} must map names to entries")
    return {name: _parse_entry(name, entry or {}, str(path)) for name, entry in raw.items()}


@lru_cache(maxsize=1)
def catalog() -> dict[str, Hardware]:
    return load_catalog_file(CATALOG)


def get_hardware(name_or_path: str) -> Hardware:
    """A catalog name (in any case: H100-SXM is h100-sxm), or a user's YAML file holding exactly one entry."""
    if name_or_path.lower() == "cpu":
        return local_cpu()
    if name_or_path.lower() in catalog():
        return catalog()[name_or_path.lower()]
    if name_or_path.endswith((".yaml", ".yml")):
        entries = load_catalog_file(Path(name_or_path))
        if len(entries) != 1:
            raise UserError(f"hardware file {name_or_path!r} must hold exactly one entry, found {len(entries)}")
        entry = next(iter(entries.values()))
        if entry.memory_bytes <= 0 or entry.peak_tflops["fp32"] <= 0:
            raise UserError(f"hardware file {name_or_path!r}: memory_gb and peak_tflops.fp32 must be positive")
        return entry
    raise UserError(f"unknown hardware {name_or_path!r}{did_you_mean(name_or_path.lower(), [*catalog(), 'cpu'])}: choose one "
                    f"of {', '.join(catalog())} or give a YAML file")


def _cpu_flops_per_cycle() -> tuple[int, bool]:
    """fp32 FLOPs per cycle per core of the widest FMA unit, and whether bf16 dot products exist."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if "avx512f" in flags:
        per_cycle = 64  # two 512-bit FMA pipes x 16 lanes x 2
    elif "fma" in flags and "avx2" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    return per_cycle, bool(flags & {"avx512_bf16", "amx_bf16"})


def _cpu_clock_hz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) * 1e6
    except (OSError, ValueError):
        pass
    return 2.0e9


@lru_cache(maxsize=1)
def local_cpu() -> Hardware:
    """The `cpu` entry completed from this machine: all ranks share its cores and memory."""
    import psutil

    cores = len(os.sched_getaffinity(0))
    per_cycle, has_bf16 = _cpu_flops_per_cycle()
    fp32_tflops = cores * _cpu_clock_hz() * per_cycle / 1e12
    base = catalog()["cpu"]
    return replace(base, description=f"{cores}-core CPU ({base.description})",
                   peak_tflops={"fp32": fp32_tflops, "bf16": fp32_tflops * (2 if has_bf16 else 1)},
                   memory_bytes=int(psutil.virtual_memory().total))


def detect(backend: str) -> Hardware:
    """The hardware trials run on: the catalog entry matching the CUDA device name, or `cpu`."""
    if backend == "cpu":
        return local_cpu()
    import torch

    device_name = torch.cuda.get_device_name(0)
    total = torch.cuda.get_device_properties(0).total_memory
    for entry in catalog().values():
        if any(pattern.lower() in device_name.lower() for pattern in entry.match):
            return replace(entry, memory_bytes=total)
    return Hardware(name=device_name, description=f"{device_name} (not in the catalog: MFU unknown)",
                    peak_tflops={"fp32": 0.0}, memory_bytes=total, memory_bandwidth_gb_s=0,
                    intra_node_gb_s=0, inter_node_gb_s=0, gpus_per_node=torch.cuda.device_count())
