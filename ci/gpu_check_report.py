"""Assemble `ci/gpu_check.sh`'s stage outputs into one JSON record and one Markdown report, and
check a record against the schema (`--check FILE`), so a dry run on CPU proves the plumbing.

    python ci/gpu_check_report.py WORK_DIR OUT_DIR [--dry-run]
    python ci/gpu_check_report.py --check OUT_DIR/gpu-check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

SCHEMA = "autoscale-gpu-check/1"
STAGE_STATUSES = ("ok", "failed", "timeout", "skipped")
# top-level key -> the type it holds (None where a stage did not run or wrote nothing)
FIELDS = {"schema": str, "dry_run": bool, "finished_at": str, "host": str, "versions": dict, "gpu": (str, type(None)),
          "stages": list, "study": (dict, type(None)), "overhead": (dict, type(None)),
          "memory": (dict, type(None)), "kernel_bench": (dict, type(None))}
STAGE_FIELDS = {"name": str, "status": str, "exit_code": int, "seconds": float, "note": str}
GIB = 2**30


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_stages(path: Path) -> list[dict]:
    """stages.tsv: name, exit code, seconds, note; one line per stage, written by gpu_check.sh."""
    stages = []
    for line in path.read_text().splitlines() if path.exists() else []:
        name, code, seconds, note = (line.split("\t") + [""])[:4]
        code = int(code)
        status = "skipped" if note.startswith("skipped") else "ok" if code == 0 else \
            "timeout" if code in (124, 137) else "failed"
        stages.append({"name": name, "status": status, "exit_code": code, "seconds": float(seconds), "note": note})
    return stages


def study_summary(summary: dict | None) -> dict | None:
    """The study's best and baseline trials, as `autoscale tune` wrote them to summary.json."""
    if summary is None:
        return None
    return {key: summary.get(key) for key in ("best", "baseline", "speedup", "counts", "launcher_fallback")}


def assemble(work: Path, *, dry_run: bool) -> dict:
    versions = read_json(work / "versions.json") or {}
    kernel_table = work / "kernels" / "table.md"
    return {"schema": SCHEMA, "dry_run": dry_run, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": platform.node(), "versions": versions, "gpu": versions.get("gpu"),
            "stages": read_stages(work / "stages.tsv"),
            "study": study_summary(read_json(work / "study" / "summary.json")),
            "overhead": read_json(work / "overhead.json"), "memory": read_json(work / "memory.json"),
            "kernel_bench": {"table_md": kernel_table.read_text()} if kernel_table.exists() else None}


def check(record: dict) -> list[str]:
    """Every way `record` departs from the schema; empty when it conforms."""
    problems = [f"{key}: missing" if key not in record else f"{key}: not {type_names(kind)}"
                for key, kind in FIELDS.items() if key not in record or not isinstance(record[key], kind)]
    if record.get("schema") != SCHEMA:
        problems.append(f"schema: expected {SCHEMA!r}")
    for stage in record.get("stages") or []:
        problems += [f"stage {stage.get('name')}: {key} missing or not {type_names(kind)}"
                     for key, kind in STAGE_FIELDS.items() if not isinstance(stage.get(key), kind)]
        if stage.get("status") not in STAGE_STATUSES:
            problems.append(f"stage {stage.get('name')}: status {stage.get('status')!r}")
    return problems


def type_names(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def gib(value) -> str:
    return f"{value / GIB:.2f}" if isinstance(value, (int, float)) else "-"


def markdown(record: dict) -> str:
    lines = [f"# GPU check{' (dry run on CPU: plumbing only, no GPU figure)' if record['dry_run'] else ''}", "",
             f"{record['finished_at']} on {record['host']}; GPU: {record['gpu'] or 'none'}", "",
             "| package | version |", "| --- | --- |"]
    lines += [f"| {name} | {version} |" for name, version in record["versions"].items() if name != "gpu"]
    lines += ["", "| stage | status | exit | seconds | note |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s['name']} | {s['status']} | {s['exit_code']} | {s['seconds']:.0f} | {s['note']} |"
              for s in record["stages"]]
    study = record["study"]
    if study:
        lines += ["", "## Warm-launcher study", "", "| trial | config | tokens/s | peak GiB |", "| --- | --- | --- | --- |"]
        for label in ("best", "baseline"):
            entry = study.get(label)
            if entry:
                metrics = entry.get("metrics", {})
                lines.append(f"| {label} | {entry.get('description', '')} | {metrics.get('tokens_per_s') or 0:,.0f} "
                             f"| {gib(metrics.get('peak_bytes'))} |")
        if study.get("launcher_fallback"):
            lines.append(f"\nfell back to fresh ranks: {study['launcher_fallback']}")
    overhead = record["overhead"]
    if overhead:
        lines += ["", f"## Per-trial overhead ({overhead['model']}, {overhead['backend']}, {overhead['rounds']} rounds)",
                  "", "| mode | trials | wall s | steps s | overhead s | tokens/s | spread |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['mode']} | {r['trials']} | {r['wall_s']:.2f} | {r['steps_s']:.2f} | {r['overhead_s']:.2f} "
                  f"| {r['tokens_per_s']:,.0f} | {r['tokens_per_s_spread']:.0%} |" for r in overhead["rows"]]
    memory = record["memory"]
    if memory:
        lines += ["", f"## Peak memory per rank ({memory['model']}, {memory['backend']}, GiB)", "",
                  "| point | status | measured (limit figure) | allocator | predicted | predicted error |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['description']} | {r['status']} | {gib(r['peak_bytes'])} | {gib(r['peak_allocator_bytes'])} "
                  f"| {gib(r['predicted_peak_bytes'])} | "
                  f"{format(r['predicted_error'], '+.1%') if r['predicted_error'] is not None else '-'} |"
                  for r in memory["rows"]]
    if record["kernel_bench"]:
        lines += ["", "## Kernel benchmarks", "", record["kernel_bench"]["table_md"].strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", type=Path)
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--check", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(read_json(args.check) or {})
        for problem in problems:
            print(f"{args.check}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if args.work is None or args.out is None:
        parser.error("WORK_DIR and OUT_DIR are required unless --check is given")
    record = assemble(args.work, dry_run=args.dry_run)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(record))
    problems = check(record)
    for problem in problems:
        print(f"gpu-check.json: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
