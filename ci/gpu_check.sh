#!/usr/bin/env bash
# One check of the CUDA path on a machine with one GPU, in under 8 minutes:
#   a short warm-launcher study (gpt-125m, 1 rank, 3 trials) and its summary; warm vs fresh per-trial overhead
#   on one point; measured (NVML and allocator) vs predicted peak memory for 5 points; the kernel
#   benchmarks' table; nvidia-smi and versions.
# Writes gpu-check.json, gpu-check.md and gpu-check-logs.tar.gz into $OUT if set, else ./gpu-check/.
#   ci/gpu_check.sh            the check (needs a CUDA device)
#   ci/gpu_check.sh --dry-run  the same plumbing on CPU with gpt-tiny: arguments, output files, JSON schema
# Wheels in .whl/ (ci/gpu_wheels.sh makes them) are installed first into a scratch folder, for a
# machine that has torch but cannot download DeepSpeed or Optuna. Env: PYTHON, CHECK_BUDGET_S (450).
set -uo pipefail

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "ci/gpu_check.sh: unknown argument '$arg' (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
OUT_DIR="${OUT:-./gpu-check}"
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/autoscale-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BUDGET_S="${CHECK_BUDGET_S:-450}"
START_S=$SECONDS
log() { echo "[gpu_check] $*" >&2; }

export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
missing_packages() { "$PYTHON" -c 'import importlib.util as u
print(" ".join(m for m in ("torch", "deepspeed", "optuna", "pydantic", "yaml", "typer") if u.find_spec(m) is None))'; }
missing=$(missing_packages) || missing="(python failed)"
if [[ -n "$missing" ]] && compgen -G ".whl/*.whl" > /dev/null; then
  log "missing $missing: installing $(ls .whl/*.whl | wc -l) carried wheels into $WORK/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .whl/*.whl || { echo "ci/gpu_check.sh: installing .whl/*.whl failed" >&2; exit 2; }
  export PYTHONPATH="$REPO_ROOT:$WORK/site${PYTHONPATH#"$REPO_ROOT"}"
  missing=$(missing_packages) || missing="(python failed)"
fi
if [[ -n "$missing" ]]; then
  echo "ci/gpu_check.sh: $PYTHON lacks $missing: run ci/gpu_wheels.sh where pip can download, and carry .whl/" >&2
  exit 2
fi

if (( DRY_RUN )); then
  BACKEND=cpu MODEL=gpt-tiny SEQ=64 PRECISION=fp32 TRIALS=2 ROUNDS=1 POINTS=2 TRIAL_TIMEOUT=120
  SPACE_ARGS=(--space zero-only --global-batch 8)
else
  if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "ci/gpu_check.sh: no CUDA device visible to $PYTHON (use --dry-run to check the plumbing on CPU)" >&2
    exit 2
  fi
  BACKEND=cuda MODEL=gpt-125m SEQ=1024 PRECISION=bf16 TRIALS=3 ROUNDS=2 POINTS=5 TRIAL_TIMEOUT=40
  SPACE_ARGS=(--space gpu-smoke --global-batch 16)
fi

# stage NAME LIMIT_S COMMAND...: runs within what is left of the budget, logs to $WORK/NAME.log,
# appends "name<TAB>exit<TAB>seconds<TAB>note" to $WORK/stages.tsv; a failed stage does not stop the rest.
stage() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET_S - (SECONDS - START_S) ))
  if (( left < 10 )); then
    printf '%s\t0\t0\tskipped: the %ss budget is spent\n' "$name" "$BUDGET_S" >> "$WORK/stages.tsv"
    log "$name: skipped, budget spent"; return
  fi
  (( limit > left )) && limit=$left
  log "$name (limit ${limit}s)"
  local began=$SECONDS code=0
  timeout --kill-after=15 "$limit" "$@" > "$WORK/$name.log" 2>&1 || code=$?
  printf '%s\t%d\t%d\t%s\n' "$name" "$code" $(( SECONDS - began )) "$(tail -n 1 "$WORK/$name.log" | tr -d '\t|' | cut -c1-160)" \
    >> "$WORK/stages.tsv"
  log "$name: exit $code after $(( SECONDS - began ))s"
}
skip() { printf '%s\t0\t0\tskipped: %s\n' "$1" "$2" >> "$WORK/stages.tsv"; log "$1: skipped: $2"; }

stage versions 30 "$PYTHON" - "$WORK/versions.json" <<'PY'
import json, subprocess, sys
from importlib.metadata import PackageNotFoundError, version
import torch
found = {"python": sys.version.split()[0], "torch_cuda": torch.version.cuda}
for name in ("torch", "deepspeed", "optuna", "triton", "nvidia-ml-py", "pydantic"):
    try:
        found[name] = version(name)
    except PackageNotFoundError:
        found[name] = None
try:
    found["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20, check=True).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    found["gpu"] = None
json.dump(found, open(sys.argv[1], "w"), indent=1)
print(found)
PY
if command -v nvidia-smi > /dev/null; then stage nvidia-smi 20 nvidia-smi; else skip nvidia-smi "not on PATH"; fi
stage study 170 "$PYTHON" -m autoscale.cli tune --model "$MODEL" --backend "$BACKEND" --nproc 1 --launcher warm \
  --trials "$TRIALS" "${SPACE_ARGS[@]}" --seq-len "$SEQ" --timeout-per-trial "$TRIAL_TIMEOUT" \
  --out "$WORK/study" --study-name gpu-check
stage overhead 100 "$PYTHON" benchmarks/trial_overhead.py --backend "$BACKEND" --nproc 1 --model "$MODEL" \
  --seq-len "$SEQ" --precision "$PRECISION" --rounds "$ROUNDS" --modes warm,fresh --json "$WORK/overhead.json"
stage memory 80 "$PYTHON" benchmarks/device_memory.py --backend "$BACKEND" --nproc 1 --model "$MODEL" \
  --seq-len "$SEQ" --precision "$PRECISION" --points "$POINTS" --timeout-per-trial "$TRIAL_TIMEOUT" \
  --json "$WORK/memory.json"
if (( DRY_RUN )); then
  skip kernel-bench "dry run: the kernel benchmarks need a GPU"
else
  stage kernel-bench 70 env BENCH_TIMEOUT_S=45 PYTHON="$PYTHON" bash ci/gpu_kernels.sh "$WORK/kernels"
fi

"$PYTHON" ci/gpu_check_report.py "$WORK" "$OUT_DIR" $( (( DRY_RUN )) && echo --dry-run ); report_code=$?
tar -czf "$OUT_DIR/gpu-check-logs.tar.gz" -C "$WORK" --exclude='site' --exclude='*.whl' . 2>/dev/null
cat "$OUT_DIR/gpu-check.md"
log "wrote $OUT_DIR/gpu-check.json, gpu-check.md, gpu-check-logs.tar.gz in $(( SECONDS - START_S ))s"
exit "$report_code"
