# Shared settings of the LibriSpeech recipe; sourced by the other scripts. Every variable can be set in the
# environment (VAR=value bash examples/librispeech/train_teachers.sh); defaults are the full-size recipe.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "${VENV:-$ROOT/.venv}/bin/python" ]]; then PYTHON="${VENV:-$ROOT/.venv}/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's proxy_end2 (proxy-end2-evaluate)
USER_DIR="$ROOT/proxy_end2"

DATA="${DATA:-$ROOT/runs/librispeech/data}"            # fairseq S2T data (prepare.sh)
EXP="${EXP:-$ROOT/runs/librispeech/exp}"               # checkpoints, generations, reports
TRAIN_SUBSET="${TRAIN_SUBSET:-train-clean-100,train-clean-360,train-other-500}"
VALID_SUBSET="${VALID_SUBSET:-dev-clean,dev-other}"
NUM_TEACHERS="${NUM_TEACHERS:-3}"
MAX_TOKENS="${MAX_TOKENS:-40000}"                      # frames per batch (fairseq's LibriSpeech recipe)
UPDATE_FREQ="${UPDATE_FREQ:-8}"                        # 8 = fairseq's 8-GPU batch on one GPU
NUM_WORKERS="${NUM_WORKERS:-4}"
AVERAGE="${AVERAGE:-10}"                               # epoch checkpoints averaged into checkpoint_avg.pt
CRITERION="${CRITERION:-proxy_dirichlet_distillation}"
LOG_INTERVAL="${LOG_INTERVAL:-100}"

# GPU when there is one (fairseq then uses it by itself), --cpu otherwise
if [[ -z "${DEVICE_ARGS+x}" ]]; then
    if "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        DEVICE_ARGS=""
    else
        DEVICE_ARGS="--cpu"
    fi
fi

fairseq() {  # fairseq <cli> ARGS: the fairseq command line of this Python (fairseq-train = fairseq train)
    local cli="$1"; shift
    "$PYTHON" -m "fairseq_cli.$cli" "$@"
}

teacher_checkpoint() { echo "$EXP/teacher$1/checkpoint_avg.pt"; }
teacher_paths() {  # a.pt:b.pt:c.pt (fairseq --path syntax)
    local paths=() i
    for i in $(seq 1 "$NUM_TEACHERS"); do paths+=("$(teacher_checkpoint "$i")"); done
    (IFS=:; echo "${paths[*]}")
}
student_dir() { echo "$EXP/student_$CRITERION"; }
