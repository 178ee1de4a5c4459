#!/usr/bin/env bash
# Build .venv from nothing: a CPU torch, fairseq (fairseq-fixed 0.12.3.1, see docs/environment.md)
# and proxy_end2 in editable mode with its test extra. Idempotent: a second run only checks the install.
#
#   bash scripts/setup_env.sh            # creates ./.venv (override with VENV=/path)
#
# Why each step is the way it is:
#  * torch==2.13.0 first: on Python 3.11 pip takes the small CPU wheel from this machine's wheel folder;
#    letting fairseq pull torch would fetch a multi-GB CUDA build.
#  * fairseq-fixed is built with --no-build-isolation so that it compiles against the torch/numpy 2.x here
#    (a build against numpy 1.x fails later with a misleading "Please build Cython components").
#  * fairseq-fixed drags in a CUDA torchaudio that raises OSError on import next to the CPU torch; nothing
#    we use needs it, so it is removed last (a later `pip install -e .` would bring it back).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
STAMP="$VENV/.proxy_end2_setup_done"

log() { echo "[setup] $*" >&2; }

if [[ -f "$STAMP" ]] && "$VENV/bin/python" -c "import fairseq, proxy_end2" 2>/dev/null; then
    log "environment at $VENV is ready"
    exit 0
fi

command -v "$PY" >/dev/null || { echo "error: $PY not found; proxy_end2 needs Python 3.11" >&2; exit 1; }
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off)

log "installing torch (CPU) and build requirements"
"${PIP[@]}" "torch==2.13.0" "numpy>=2,<3" cython setuptools wheel
log "installing fairseq (fairseq-fixed 0.12.3.1, built against this torch)"
"${PIP[@]}" --no-build-isolation "fairseq-fixed==0.12.3.1"
log "installing proxy_end2 (editable) with its test extra"
"${PIP[@]}" --no-build-isolation -e "$ROOT[test]"
log "removing the CUDA torchaudio that fairseq-fixed pulls in (it cannot import next to a CPU torch)"
"$VENV/bin/python" -m pip uninstall -y -q torchaudio 2>/dev/null || true
"$VENV/bin/python" -c "import fairseq, proxy_end2, torch; print('[setup] fairseq', fairseq.__version__, 'torch', torch.__version__)" >&2
touch "$STAMP"
log "done"
