#!/usr/bin/env bash
# Step 2 of the WMT17 En-De recipe: the ensemble. NUM_TEACHERS transformer_wmt_en_de_big members, one per seed,
# with the authors' member hyper-parameters, on all visible GPUs (fairseq's own distributed training), fp16 on
# GPU. Each member is then the average of its last TEACHER_AVERAGE_LAST checkpoints (0: checkpoint_best.pt).
#
#   bash train_teachers.sh                 # $TEACHERS_DIR/teacher1.pt ... teacher$NUM_TEACHERS.pt
#
# A member whose teacher<i>.pt exists is skipped; an interrupted fairseq-train resumes from its
# checkpoint_last.pt. With an ensemble trained elsewhere, skip this script and set TEACHER_PATHS (README).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

TEACHER_ARCH="${TEACHER_ARCH:-transformer_wmt_en_de_big}"
TEACHER_LR="${TEACHER_LR:-5e-4}"
TEACHER_WARMUP="${TEACHER_WARMUP:-4000}"
TEACHER_DROPOUT="${TEACHER_DROPOUT:-0.1}"
TEACHER_MAX_TOKENS="${TEACHER_MAX_TOKENS:-4096}"       # per GPU
TEACHER_UPDATE_FREQ="${TEACHER_UPDATE_FREQ:-1}"        # tokens per update = GPUs x MAX_TOKENS x UPDATE_FREQ
TEACHER_MAX_UPDATE="${TEACHER_MAX_UPDATE:-300000}"
TEACHER_MAX_EPOCH="${TEACHER_MAX_EPOCH:-0}"            # 0: no epoch limit
TEACHER_AVERAGE_LAST="${TEACHER_AVERAGE_LAST:-5}"      # average the last N epoch checkpoints (0: checkpoint_best.pt)
TEACHER_LOG_INTERVAL="${TEACHER_LOG_INTERVAL:-100}"
TEACHER_EXTRA_ARGS="${TEACHER_EXTRA_ARGS:-}"           # anything else for fairseq-train (word-split)

[[ -f "$MANIFEST" ]] || die "$MANIFEST not found: run prepare.sh first"
[[ -z "$TEACHER_PATHS" ]] || die "TEACHER_PATHS is set ($TEACHER_PATHS): the ensemble comes from elsewhere, nothing to train"
fp16=()
(( FP16 )) && fp16=(--fp16)
log "$NUM_TEACHERS teachers ($TEACHER_ARCH) on ${NUM_GPUS} GPU(s)${GPU_IDS:+ (${GPU_IDS[*]})}, fp16=$FP16"

for ((i = 1; i <= NUM_TEACHERS; i++)); do
    out="$TEACHERS_DIR/teacher$i.pt"
    save_dir="$TEACHERS_DIR/teacher$i"
    done_already "$out" && continue
    keep=$(( TEACHER_AVERAGE_LAST > 1 ? TEACHER_AVERAGE_LAST : 1 ))
    optimizer_flags "$TEACHER_LR" "$TEACHER_WARMUP" 0.0 "$TEACHER_DROPOUT"
    run "teacher$i" $FAIRSEQ_TRAIN "$DATA_BIN" --user-dir "$USER_DIR" --task translation -s "$SRC" -t "$TGT" \
        --arch "$TEACHER_ARCH" --share-decoder-input-output-embed "${OPTIMIZER_FLAGS[@]}" \
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
        --max-tokens "$TEACHER_MAX_TOKENS" --update-freq "$TEACHER_UPDATE_FREQ" \
        --max-update "$TEACHER_MAX_UPDATE" --max-epoch "$TEACHER_MAX_EPOCH" --keep-last-epochs "$keep" \
        --seed $((TEACHER_SEED + i - 1)) --save-dir "$save_dir" --required-batch-size-multiple 1 \
        --log-format simple --log-interval "$TEACHER_LOG_INTERVAL" "${fp16[@]}" "${DEVICE_FLAGS[@]}" \
        $TEACHER_EXTRA_ARGS
    finalise_checkpoint "teacher$i" "$save_dir" "$TEACHER_AVERAGE_LAST" "$out"
    log "teacher $i: $out"
done
log "ensemble: $(teacher_paths)"
