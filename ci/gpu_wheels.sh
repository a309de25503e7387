#!/usr/bin/env bash
# Fetch, here, the wheels ci/gpu_check.sh needs on a GPU machine that has torch but cannot download:
# DeepSpeed (built here as a wheel: PyPI ships it as a source archive only), Optuna, plotly and
# the packages of theirs that such a machine lacks, for CPython 3.12 on x86-64 Linux.
#   ci/gpu_wheels.sh [DIR]      (default .whl; ignored by git)
# Prints each wheel and the total size; fails if the total passes MAX_MIB (default 48).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${1:-.whl}"
MAX_MIB="${MAX_MIB:-48}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# The versions installed here, which the tests ran with; pure-Python wheels, then compiled ones.
pins() { "$PYTHON" -c 'import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))' "$@"; }
read -r -a PURE <<< "$(pins optuna alembic colorlog Mako hjson pydantic annotated-types typing-inspection \
                       typing_extensions plotly)"
read -r -a COMPILED <<< "$(pins pydantic-core SQLAlchemy)"
DEEPSPEED="$(pins deepspeed)"
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)

mkdir -p "$dir"
rm -f "$dir"/*.whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" "${PURE[@]}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]/#/--platform=}" -d "$dir" "${COMPILED[@]}"
# DeepSpeed's setup.py imports torch; no ops are prebuilt (DS_BUILD_OPS=0), so the wheel is pure Python.
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$dir" "$DEEPSPEED"

ls -l "$dir"/*.whl | awk '{printf "%8.1f MiB  %s\n", $5 / 1048576, $NF}'
total=$(du -cb "$dir"/*.whl | tail -1 | cut -f1)
printf 'total %.1f MiB in %s\n' "$(echo "$total / 1048576" | bc -l)" "$dir"
if (( total > MAX_MIB * 1048576 )); then
  echo "ci/gpu_wheels.sh: the wheels take more than ${MAX_MIB} MiB; the device tool carries 64 MiB in all" >&2
  exit 1
fi
