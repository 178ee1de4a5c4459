#!/usr/bin/env bash
# Set everything up (./.venv) and run the synthetic main job: teachers -> distilled Prior-Network students ->
# generation with uncertainty -> reports and a summary table.
#   bash examples/synthetic/run.sh                      # outputs in runs/main_job (re-running resumes)
#   bash examples/synthetic/run.sh --out /tmp/my_run    # extra arguments go to main_job.py (see --help)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${VENV:-$ROOT/.venv}/bin/python" "$ROOT/examples/synthetic/main_job.py" "$@"
