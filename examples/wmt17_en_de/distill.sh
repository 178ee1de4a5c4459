#!/usr/bin/env bash
# Step 3 of the WMT17 En-De recipe: the students.
#  a. the ensemble's beam-search translations of the training source (the authors' sequence-level data:
#     beam 5, fp16 on GPU), one fairseq-generate shard per GPU; binarised with the original dictionaries;
#  b. one prior_transformer_wmt_en_de_big student per criterion in $CRITERIA, from scratch (STUDENT_INIT to
#     start from a checkpoint), with the authors' student hyper-parameters, teachers run in fp16 on GPU:
#     proxy_dirichlet_distillation (the method) and the baselines forward_proxy_dirichlet_distillation,
#     ensemble_kl_distillation (EnD), dirichlet_nll_distillation (EnD^2).
#
#   bash distill.sh                           # $STUDENTS_DIR/<criterion>.pt
#   STUDENT_TARGETS=reference bash distill.sh # learn from the references instead (skips a.)
#
# Steps whose output exists are skipped; an interrupted fairseq-train resumes from its checkpoint_last.pt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

STUDENT_TARGETS="${STUDENT_TARGETS:-ensemble}"   # ensemble (the authors') | reference
TRANSLATE_BEAM="${TRANSLATE_BEAM:-5}"
TRANSLATE_MAX_TOKENS="${TRANSLATE_MAX_TOKENS:-8000}"   # per shard (the authors: 1024)
TRANSLATE_SHARDS="${TRANSLATE_SHARDS:-$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))}"
TRANSLATE_EXTRA_ARGS="${TRANSLATE_EXTRA_ARGS:-}"
STUDENT_ARCH="${STUDENT_ARCH:-prior_transformer_wmt_en_de_big}"
STUDENT_INIT="${STUDENT_INIT:-}"                 # a checkpoint to start from (e.g. a teacher); empty: from scratch
STUDENT_LR="${STUDENT_LR:-5e-4}"
STUDENT_WARMUP="${STUDENT_WARMUP:-4000}"
STUDENT_DROPOUT="${STUDENT_DROPOUT:-0.2}"
STUDENT_CLIP_NORM="${STUDENT_CLIP_NORM:-10.0}"
STUDENT_MAX_TOKENS="${STUDENT_MAX_TOKENS:-4096}"     # per GPU; with UPDATE_FREQ 8: the authors' 1024 x 32 tokens
STUDENT_UPDATE_FREQ="${STUDENT_UPDATE_FREQ:-8}"
STUDENT_MAX_UPDATE="${STUDENT_MAX_UPDATE:-20000}"
STUDENT_MAX_EPOCH="${STUDENT_MAX_EPOCH:-0}"
STUDENT_SEED="${STUDENT_SEED:-0}"
STUDENT_AVERAGE_LAST="${STUDENT_AVERAGE_LAST:-0}"    # 0: the checkpoint with the best validation NLL
STUDENT_LOG_INTERVAL="${STUDENT_LOG_INTERVAL:-100}"
TEACHER_DTYPE="${TEACHER_DTYPE:-auto}"               # auto: fp16 on GPU, fp32 on CPU
STUDENT_EXTRA_ARGS="${STUDENT_EXTRA_ARGS:-}"

[[ -f "$MANIFEST" ]] || die "$MANIFEST not found: run prepare.sh first"
IFS=: read -r -a teachers <<<"$(teacher_paths)"
for t in "${teachers[@]}"; do [[ -f "$t" ]] || die "teacher $t not found: run train_teachers.sh or set TEACHER_PATHS"; done
[[ -z "$STUDENT_INIT" || -f "$STUDENT_INIT" ]] || die "STUDENT_INIT=$STUDENT_INIT: no such checkpoint"
case "$STUDENT_TARGETS" in ensemble|reference) ;; *) die "STUDENT_TARGETS must be ensemble or reference" ;; esac
declare -A CRITERION_FLAGS=(
    [proxy_dirichlet_distillation]="--target-concentration mkl --target-offset 1"
    [forward_proxy_dirichlet_distillation]="--target-concentration mkl --target-offset 1"
    [ensemble_kl_distillation]=""
    [dirichlet_nll_distillation]=""
)
for c in $CRITERIA; do [[ -n "${CRITERION_FLAGS[$c]+x}" ]] || die "unknown criterion $c in CRITERIA"; done
[[ "$TEACHER_DTYPE" == auto ]] && { (( NUM_GPUS > 0 )) && TEACHER_DTYPE=fp16 || TEACHER_DTYPE=fp32; }

# ------------------------------------------------------------------------------------------------ a. translations
translate_train() {  # one fairseq-generate per shard, each on its own GPU, all at once (on the CPU: in turn)
    local pids=() i shard
    for ((i = 0; i < TRANSLATE_SHARDS; i++)); do
        shard="$DISTILL_DIR/shard$i"
        done_already "$shard/generate-train.txt" && continue
        if (( NUM_GPUS > 0 )); then
            translate_shard "$i" "${GPU_IDS[$((i % NUM_GPUS))]}" &
            pids+=($!)
        else
            translate_shard "$i" "" || die "translation shard $i failed (log: $LOGS/translate_train_shard$i.log)"
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "a translation shard failed (logs: $LOGS/translate_train_shard*.log)"; done
}

translate_shard() {  # SHARD GPU: fairseq-generate of shard SHARD of the training set, moved into place when complete
    local i="$1" shard="$DISTILL_DIR/shard$1" gpu=() fp16=()
    [[ -n "$2" ]] && gpu=(env CUDA_VISIBLE_DEVICES="$2")
    (( FP16 )) && fp16=(--fp16)
    rm -rf "$shard.tmp"
    run "translate_train_shard$i" "${gpu[@]}" $FAIRSEQ_GENERATE "$DATA_BIN" --user-dir "$USER_DIR" \
        --task translation_distillation --no-uncertainty -s "$SRC" -t "$TGT" --path "$(teacher_paths)" \
        --gen-subset train --beam "$TRANSLATE_BEAM" --nbest 1 --max-tokens "$TRANSLATE_MAX_TOKENS" \
        --distributed-world-size "$TRANSLATE_SHARDS" --distributed-rank "$i" --results-path "$shard.tmp" \
        "${fp16[@]}" "${DEVICE_FLAGS[@]}" $TRANSLATE_EXTRA_ARGS \
    && mkdir -p "$shard" && mv "$shard.tmp/generate-train.txt" "$shard/" && rm -rf "$shard.tmp"
}

distill_data() {  # the students' data folder: train = the ensemble's translations, valid as it is
    local out="$DISTILL_DIR/data-bin" pieces="$TEXT/spm"
    done_already "$out/dict.$TGT.txt" && return 0
    local shards=() i
    for ((i = 0; i < TRANSLATE_SHARDS; i++)); do shards+=("$DISTILL_DIR/shard$i/generate-train.txt"); done
    done_already "$DISTILL_DIR/train.$TGT" || run distill_data "$PYTHON" "$TOOLS/ensemble_targets.py" \
        --shards "$(IFS=,; echo "${shards[*]}")" --references "$pieces/train.clean.$TGT" --output "$DISTILL_DIR/train.$TGT"
    cp "$pieces/train.clean.$SRC" "$DISTILL_DIR/train.$SRC"
    rm -rf "$out.tmp"
    run distill_data $FAIRSEQ_PREPROCESS --source-lang "$SRC" --target-lang "$TGT" --trainpref "$DISTILL_DIR/train" \
        --srcdict "$DATA_BIN/dict.$SRC.txt" --tgtdict "$DATA_BIN/dict.$TGT.txt" --destdir "$out.tmp" --workers "$WORKERS"
    local f
    for f in "$DATA_BIN"/valid.$SRC-$TGT.*; do ln -s "$f" "$out.tmp/"; done
    mv "$out.tmp" "$out"
}

if [[ "$STUDENT_TARGETS" == reference ]]; then
    STUDENT_DATA="$DATA_BIN"
else
    mkdir -p "$DISTILL_DIR"
    translate_train
    distill_data
    STUDENT_DATA="$DISTILL_DIR/data-bin"
fi

# ------------------------------------------------------------------------------------------------ b. students
fp16=()
(( FP16 )) && fp16=(--fp16 --memory-efficient-fp16)
init=()
[[ -n "$STUDENT_INIT" ]] && init=(--student-init "$STUDENT_INIT")
log "students ($STUDENT_ARCH) on ${NUM_GPUS} GPU(s), targets: $STUDENT_TARGETS, teachers in $TEACHER_DTYPE: $CRITERIA"
for criterion in $CRITERIA; do
    out="$STUDENTS_DIR/$criterion.pt"
    save_dir="$STUDENTS_DIR/$criterion"
    done_already "$out" && continue
    optimizer_flags "$STUDENT_LR" "$STUDENT_WARMUP" "$STUDENT_CLIP_NORM" "$STUDENT_DROPOUT"
    run "student_$criterion" $FAIRSEQ_TRAIN "$STUDENT_DATA" --user-dir "$USER_DIR" --task translation_distillation \
        -s "$SRC" -t "$TGT" --teacher-paths "$(teacher_paths)" --teacher-dtype "$TEACHER_DTYPE" "${init[@]}" \
        --arch "$STUDENT_ARCH" --share-decoder-input-output-embed \
        --criterion "$criterion" ${CRITERION_FLAGS[$criterion]} "${OPTIMIZER_FLAGS[@]}" \
        --max-tokens "$STUDENT_MAX_TOKENS" --update-freq "$STUDENT_UPDATE_FREQ" --max-update "$STUDENT_MAX_UPDATE" --max-epoch "$STUDENT_MAX_EPOCH" \
        --keep-last-epochs $(( STUDENT_AVERAGE_LAST > 10 ? STUDENT_AVERAGE_LAST : 10 )) \
        --best-checkpoint-metric nll_loss --seed "$STUDENT_SEED" --save-dir "$save_dir" \
        --log-format simple --log-interval "$STUDENT_LOG_INTERVAL" "${fp16[@]}" "${DEVICE_FLAGS[@]}" \
        $STUDENT_EXTRA_ARGS
    finalise_checkpoint "student_$criterion" "$save_dir" "$STUDENT_AVERAGE_LAST" "$out"
    log "student $criterion: $out"
done
