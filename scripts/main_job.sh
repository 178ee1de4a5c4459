#!/usr/bin/env bash
# Set everything up (./.venv) and run the main job: teachers -> distilled Prior-Network students -> report.
#   bash scripts/main_job.sh                      # outputs in runs/main_job (re-running resumes)
#   bash scripts/main_job.sh --out /tmp/my_run    # extra arguments go to python -m proxy_end2.main_job
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${VENV:-$ROOT/.venv}/bin/python" -m proxy_end2.main_job "$@"
