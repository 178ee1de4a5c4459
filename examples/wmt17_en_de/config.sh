# Shared settings and helpers of the WMT17 En-De recipe; sourced by every script of this folder.
#
# Every path, size and count is a variable with a default: set it in the environment to change it, e.g.
#   WORK=/data/wmt17 NUM_TEACHERS=3 bash examples/wmt17_en_de/train_teachers.sh
# The defaults are the authors' settings (reference recipe: Ryabinin, Malinin & Gales, NeurIPS 2021) where
# their code states them; examples/wmt17_en_de/README.md lists every variable and where we depart.

RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$RECIPE_DIR/../.." && pwd)"
TOOLS="$RECIPE_DIR/tools"

# ---------------------------------------------------------------------------------------------- environment
PYTHON="${PYTHON:-python3}"
USER_DIR="${USER_DIR:-$REPO_ROOT/proxy_end2}"             # fairseq --user-dir (always passed: safe checkpoint loading)
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the recipe's tools use proxy_end2.evaluation
FAIRSEQ_PREPROCESS="${FAIRSEQ_PREPROCESS:-$PYTHON -m fairseq_cli.preprocess}"
FAIRSEQ_TRAIN="${FAIRSEQ_TRAIN:-$PYTHON -m fairseq_cli.train}"    # e.g. "torchrun --nproc_per_node 8 $(which fairseq-train)"
FAIRSEQ_GENERATE="${FAIRSEQ_GENERATE:-$PYTHON -m fairseq_cli.generate}"
CPU="${CPU:-0}"                # 1: run everything on the CPU (--cpu), even where there are GPUs
FP16="${FP16:-auto}"           # auto: fp16 where the authors used it when there is a GPU; 1/0 force it on/off
WORKERS="${WORKERS:-$(nproc 2>/dev/null || echo 4)}"   # CPU processes for text processing and fairseq-preprocess

# ---------------------------------------------------------------------------------------------- layout
SRC="${SRC:-en}"
TGT="${TGT:-de}"
WORK="${WORK:-$PWD/wmt17_en_de}"          # everything the recipe writes
RAW_DIR="${RAW_DIR:-$WORK/orig}"          # downloaded (or user-provided) WMT archives
TEXT="${TEXT:-$WORK/text}"                # raw, normalised and sentencepiece-encoded text
DATA_BIN="${DATA_BIN:-$WORK/data-bin}"    # binarised data, dictionaries, spm.model and the set manifest sets.tsv
TEACHERS_DIR="${TEACHERS_DIR:-$WORK/teachers}"
DISTILL_DIR="${DISTILL_DIR:-$WORK/distill}"
STUDENTS_DIR="${STUDENTS_DIR:-$WORK/students}"
GENERATE_DIR="${GENERATE_DIR:-$WORK/generate}"
REPORTS_DIR="${REPORTS_DIR:-$WORK/reports}"
LOGS="${LOGS:-$WORK/logs}"
for _var in WORK RAW_DIR TEXT DATA_BIN TEACHERS_DIR DISTILL_DIR STUDENTS_DIR GENERATE_DIR REPORTS_DIR LOGS; do
    printf -v "$_var" '%s' "$(realpath -m "${!_var}")"   # absolute: the scripts link and cd between folders
done
MANIFEST="$DATA_BIN/sets.tsv"             # subset, role (valid|test|ood), description, raw source, raw reference

# ---------------------------------------------------------------------------------------------- ensemble
NUM_TEACHERS="${NUM_TEACHERS:-5}"
TEACHER_SEED="${TEACHER_SEED:-1}"         # member i trains with seed TEACHER_SEED + i - 1
# an ensemble trained elsewhere: TEACHER_PATHS=/path/m1.pt:/path/m2.pt:... (same dictionaries; see README)
TEACHER_PATHS="${TEACHER_PATHS:-}"

# ---------------------------------------------------------------------------------------------- students, models
# one student per criterion (distill.sh); the models generate.sh and evaluate.sh use
CRITERIA="${CRITERIA:-proxy_dirichlet_distillation forward_proxy_dirichlet_distillation ensemble_kl_distillation dirichlet_nll_distillation}"
STUDENT_MODELS=""
for _criterion in $CRITERIA; do STUDENT_MODELS+=" student_$_criterion"; done
MODELS="${MODELS:-ensemble teacher1$STUDENT_MODELS}"   # ensemble, teacher<i> (one member), student_<criterion>

# ---------------------------------------------------------------------------------------------- helpers
log() { echo "[wmt17 $(date '+%F %T')] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# run NAME CMD...: show the command, run it with its output on the terminal and in $LOGS/NAME.log
run() {
    local name="$1"; shift
    mkdir -p "$LOGS"
    log "\$ $*"
    echo "\$ $*" >>"$LOGS/$name.log"
    "$@" 2>&1 | tee -a "$LOGS/$name.log"
}

# done_already FILE...: true (and says so) if every FILE exists: the step that writes them is skipped
done_already() {
    local f
    for f in "$@"; do [[ -e "$f" ]] || return 1; done
    log "skip: $1$( (( $# > 1 )) && echo " and $(( $# - 1 )) more") already there"
}

# GPU ids fairseq may use: those of CUDA_VISIBLE_DEVICES, else all that nvidia-smi lists (none with CPU=1)
gpu_ids() {
    [[ "$CPU" == 1 ]] && return 0
    if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
        tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -v '^ *$' || true
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true
    fi
}
GPU_IDS=($(gpu_ids))
NUM_GPUS=${#GPU_IDS[@]}

if [[ "$FP16" == auto ]]; then
    if (( NUM_GPUS > 0 )); then FP16=1; else FP16=0; fi
fi
DEVICE_FLAGS=()
[[ "$CPU" == 1 ]] && DEVICE_FLAGS=(--cpu)

# optimizer_flags LR WARMUP CLIP DROPOUT: the authors' optimisation settings of members and students into
# OPTIMIZER_FLAGS: Adam (0.9, 0.98), inverse square root schedule, weight decay 1e-4
optimizer_flags() {
    OPTIMIZER_FLAGS=(--optimizer adam --adam-betas '(0.9, 0.98)' --lr "$1" --lr-scheduler inverse_sqrt
                     --warmup-updates "$2" --clip-norm "$3" --dropout "$4" --weight-decay 0.0001)
}

# finalise_checkpoint LOG SAVE_DIR AVERAGE_LAST OUT: the checkpoint the later steps use, from a finished
# fairseq-train: the average of the last AVERAGE_LAST checkpoints, or (0 or 1) checkpoint_best.pt
finalise_checkpoint() {
    if (( $3 > 1 )); then
        run "$1" "$PYTHON" "$TOOLS/average_checkpoints.py" --save-dir "$2" --last "$3" --output "$4"
    else
        cp "$2/checkpoint_best.pt" "$4.tmp" && mv "$4.tmp" "$4"
    fi
}

# the ensemble's checkpoints, colon separated (fairseq --path syntax)
teacher_paths() {
    if [[ -n "$TEACHER_PATHS" ]]; then echo "$TEACHER_PATHS"; return; fi
    local i paths=()
    for ((i = 1; i <= NUM_TEACHERS; i++)); do paths+=("$TEACHERS_DIR/teacher$i.pt"); done
    (IFS=:; echo "${paths[*]}")
}

# subsets of the manifest with a role (test / ood / valid), in manifest order
subsets_with_role() {
    [[ -f "$MANIFEST" ]] || die "$MANIFEST not found: run prepare.sh first"
    awk -F'\t' -v role="$1" '!/^#/ && $2 == role { print $1 }' "$MANIFEST"
}

# column N (4: raw source, 5: raw reference) of SUBSET in the manifest
manifest_field() {
    awk -F'\t' -v s="$1" -v n="$2" '!/^#/ && $1 == s { print $n }' "$MANIFEST"
}
