# Sourced by the examples' run.sh: sets PY to $PYTHON, else the repository's .venv/bin/python, else python.
# Expects ROOT (the repository) to be set.
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python
fi
