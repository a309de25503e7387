#!/usr/bin/env bash
# A short real study of gpt-350m on a CUDA machine (under 8 minutes); writes and prints its summary.
#   ci/gpu_smoke.sh [OUT_DIR]        (default runs/gpu-smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-smoke}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'ci/gpu_smoke.sh: no CUDA device')"
rm -rf "$out"
# 6 trials of at most 60 s each fit in 8 minutes with the warm ranks' start-up
timeout 450 autoscale tune --model gpt-350m --backend cuda --space search_spaces/gpu-smoke.yaml \
  --trials 6 --global-batch 32 --seq-len 1024 --timeout-per-trial 60 --out "$out" --study-name gpu-smoke
python - "$out/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
best, base = summary["best"], summary["baseline"]
print(f"hardware: {summary['hardware']['description']}  versions: {summary['versions']}")
for label, entry in (("best", best), ("baseline", base)):
    if entry:
        m = entry["metrics"]
        print(f"{label:<9} {entry['description']}: {m['tokens_per_s']:,.0f} tokens/s, MFU {100 * (m['mfu'] or 0):.1f}%, "
              f"peak {m['peak_bytes'] / 2**30:.1f} GiB")
print(f"speed-up over baseline: {summary['speedup']:.2f}x" if summary["speedup"] else "no baseline measured")
PY
