#!/usr/bin/env bash
# Write ci/constraints.txt: the exact versions of every package that `make setup` installs, frozen from a
# fresh venv that installed the newest releases pyproject.toml's ranges allow (as the nightly `fresh-deps`
# job does). Run it, run .ci/run, and commit the file when CI is green: that is the set a new user gets.
#   ci/lock.sh [VENV]   (default: a temporary venv, removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-$(mktemp -d /tmp/autoscale-lock.XXXXXX)}
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "torch==2.13.0"      # the CPU build lies on CI's disk
"$VENV/bin/pip" install --quiet -e ".[test,hf,export,postgres,bench]"
{
  echo "# The versions CI tested (ci/lock.sh wrote this from a fresh install; make setup and .ci/run use it)."
  echo "# torch's local label (+cpu) is dropped so the same pin serves CUDA machines."
  "$VENV/bin/pip" freeze --exclude-editable | grep -v -i '^autoscale' | sed -E 's/^(torch==[^+]+)\+.*/\1/'
} > ci/constraints.txt
echo "wrote ci/constraints.txt ($(grep -c '==' ci/constraints.txt) pins) from $VENV"
[ -n "${1:-}" ] || rm -rf "$VENV"
