#!/usr/bin/env bash
# The many-classes experiment (Proxy-EnD^2 vs EnD^2 vs EnD as K grows), full size, from any directory:
#   bash examples/many_classes/run.sh            # writes examples/many_classes/results/
#   bash examples/many_classes/run.sh --quick    # reduced run, writes runs/examples/many_classes_quick/
# Extra arguments go to run_experiment.py (see --help). Python: $PYTHON, else the repository's .venv, else python.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/examples/pick_python.sh"
exec "$PY" "$HERE/run_experiment.py" "$@"
