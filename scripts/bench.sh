#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs the benchmark suite (the quick CPU suite
# by default). Extra arguments go to `python -m fastconv.bench` (see --help).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m fastconv.bench "$@"
