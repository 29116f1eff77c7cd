#!/usr/bin/env bash
# Sets up .venv and builds fastconv into it; idempotent: a second run reuses the environment,
# reinstalls dependencies only when requirements-dev.txt changed, and lets ninja recompile
# only the sources that changed (objects persist in build/temp). The build log, with nvcc's
# per-kernel resource report, is kept in build/build.log.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.requirements-installed
wanted=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "[setup] installing dependencies into .venv" >&2
  # torch's CUDA build and its libraries take ~6 GiB in the venv; a CI machine once failed here
  # with ENOSPC, so say up front how much room there is (pip's own error names no sizes).
  free_kb=$(df -Pk . 2>/dev/null | awk 'NR == 2 {print $4}') || true
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((7 * 1024 * 1024)) ]; then
    echo "[setup] warning: $((free_kb / 1024)) MiB free in $ROOT; the dependencies need ~6 GiB" >&2
  fi
  # --no-cache-dir: no second copy of the wheels in ~/.cache/pip
  .venv/bin/python -m pip install --quiet --no-cache-dir -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi
mkdir -p build
echo "[setup] building fastconv (log: build/build.log)" >&2
if ! MAX_JOBS=${MAX_JOBS:-2} .venv/bin/python -m pip install -v --no-build-isolation --no-deps -e . \
    > build/build.log 2>&1; then
  tail -n 60 build/build.log >&2
  echo "[setup] build failed; full log in build/build.log" >&2
  exit 1
fi
# nvcc's per-kernel resource report (registers, shared memory, spills) appears only when a .cu
# file was recompiled; keep the latest one for tests/test_build.py.
if grep -q "ptxas info" build/build.log; then
  grep -E "ptxas info|ptxas warning|Function properties|bytes stack frame" build/build.log > build/ptxas.log
fi
