#!/usr/bin/env bash
# Run the named test tiers one after another and print each one's wall time; exit non-zero if any failed.
#   ci/test-tiers.sh PYTHON TIER...   tiers: fast (no multi-rank trial), multi-rank (one slow test of every
#   kind: the CI tier), nightly (the other slow tests), all
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=$1; shift
declare -A MARKS=([fast]="not slow" [multi-rank]="slow and not nightly" [nightly]="nightly" [all]="")
status=0; summary=""
for tier in "$@"; do
  [ -n "${MARKS[$tier]+set}" ] || { echo "test-tiers: unknown tier '$tier' (fast, multi-rank, nightly, all)" >&2; exit 2; }
  echo "=== tier $tier: pytest -m '${MARKS[$tier]}'"
  start=$(date +%s)
  "$PYTHON" -m pytest -q ${MARKS[$tier]:+-m "${MARKS[$tier]}"}; code=$?
  seconds=$(( $(date +%s) - start ))
  summary+=$(printf '\n  %-11s %5d s  exit %d  (load average now: %s)' "$tier" "$seconds" "$code" "$(cut -d' ' -f1-3 /proc/loadavg)")
  [ "$code" -eq 0 ] || status=1
done
echo "=== test tiers (wall time):$summary"
exit $status
