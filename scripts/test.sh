#!/usr/bin/env bash
# Set everything up (./.venv, see scripts/setup_env.sh) and run the test suite on CPU.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -k losses  # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
