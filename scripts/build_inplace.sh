#!/usr/bin/env bash
# Builds fastconv's extensions into the source tree (fastconv/_C*.so, fastconv/_simt*.so) with
# an existing Python environment, without installing anything: for a second checkout (a git
# worktree) that shares one environment with the first. Use it as
#   PYTHON=/path/to/.venv/bin/python bash scripts/build_inplace.sh
#   PYTHONPATH=$PWD $PYTHON -m pytest tests -q
# PYTHONPATH wins over an editable install of another checkout in the same environment.
# Objects persist in build/temp; the log is build/build.log, nvcc's resource report
# build/ptxas.log (as scripts/setup.sh leaves them).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p build
if ! MAX_JOBS=${MAX_JOBS:-2} "$PYTHON" setup.py build_ext --inplace > build/build.log 2>&1; then
  tail -n 60 build/build.log >&2
  echo "[build_inplace] build failed; full log in build/build.log" >&2
  exit 1
fi
if grep -q "ptxas info" build/build.log; then
  grep -E "ptxas info|ptxas warning|Function properties|bytes stack frame" build/build.log > build/ptxas.log
fi
echo "[build_inplace] built into $ROOT/fastconv" >&2
