#!/usr/bin/env bash
# The ensemble: NUM_TEACHERS (3) s2t_transformer models with fairseq's LibriSpeech recipe (seeds 1..N), each
# averaged over its last AVERAGE (10) epoch checkpoints into $EXP/teacher<i>/checkpoint_avg.pt.
# Re-running resumes an interrupted teacher and skips finished ones.
# Variables: TEACHER_ARCH (s2t_transformer_s), TEACHER_LR (2e-3), TEACHER_WARMUP (10000),
# TEACHER_MAX_UPDATE (300000), TEACHER_EXTRA (more fairseq-train arguments), and those of common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
TEACHER_ARCH="${TEACHER_ARCH:-s2t_transformer_s}"
TEACHER_LR="${TEACHER_LR:-2e-3}"
TEACHER_WARMUP="${TEACHER_WARMUP:-10000}"
TEACHER_MAX_UPDATE="${TEACHER_MAX_UPDATE:-300000}"
read -r -a EXTRA <<< "${TEACHER_EXTRA:-}"

for i in $(seq 1 "$NUM_TEACHERS"); do
    save="$EXP/teacher$i"
    if [[ -f "$(teacher_checkpoint "$i")" ]]; then echo "teacher $i: $(teacher_checkpoint "$i") exists"; continue; fi
    fairseq train "$DATA" --task speech_to_text --config-yaml config.yaml \
        --train-subset "$TRAIN_SUBSET" --valid-subset "$VALID_SUBSET" \
        --arch "$TEACHER_ARCH" --share-decoder-input-output-embed \
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --report-accuracy \
        --optimizer adam --lr "$TEACHER_LR" --lr-scheduler inverse_sqrt --warmup-updates "$TEACHER_WARMUP" \
        --clip-norm 10.0 --seed "$i" --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" \
        --max-update "$TEACHER_MAX_UPDATE" --keep-last-epochs "$AVERAGE" --required-batch-size-multiple 1 \
        --num-workers "$NUM_WORKERS" --save-dir "$save" --log-format simple --log-interval "$LOG_INTERVAL" \
        $DEVICE_ARGS ${EXTRA[@]+"${EXTRA[@]}"}
    "$PYTHON" "$HERE/average_checkpoints.py" --save-dir "$save" --last "$AVERAGE" --output "$(teacher_checkpoint "$i")"
done
