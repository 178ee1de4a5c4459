#!/usr/bin/env bash
# The classification examples, from any directory: digits (CNN ensemble) then the 3-class spiral.
#   bash examples/classification/run.sh          # writes examples/classification/results/{digits,spiral}/
#   bash examples/classification/run.sh --quick  # reduced runs, written under runs/examples/
# Extra arguments go to both run_digits.py and run_spiral.py (see --help); give --out to one script at a time.
# Python: $PYTHON, else the repository's .venv, else python.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/examples/pick_python.sh"
"$PY" "$HERE/run_digits.py" "$@"
"$PY" "$HERE/run_spiral.py" "$@"
