#!/usr/bin/env bash
# The README's main job as a new user runs it: the installed `autoscale` console script, started from a
# folder outside the repository (so nothing of the checkout shadows an installed package), a 3-trial study
# of the embedded default, then `autoscale --version`. Fails if any step does or a promised file is missing.
#   ci/smoke.sh [VENV_BIN]   (default: .venv/bin)
set -euo pipefail
BIN=$(cd "${1:-.venv/bin}" && pwd)
WORK=$(mktemp -d /tmp/autoscale-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
echo "smoke: in $WORK: autoscale tune --model gpt-tiny --trials 3"
start=$(date +%s)
"$BIN/autoscale" tune --model gpt-tiny --trials 3 --out "$WORK/run"
for file in ds_config.json trials.csv summary.json report.html; do
  [ -s "$WORK/run/$file" ] || { echo "smoke: the study wrote no $file" >&2; exit 1; }
done
"$BIN/autoscale" --version
echo "smoke: passed in $(( $(date +%s) - start )) s"
