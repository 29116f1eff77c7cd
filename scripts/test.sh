#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs the whole test suite. Extra arguments go
# to pytest (e.g. `bash scripts/test.sh -k max_pool -x`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest tests -q "$@"
