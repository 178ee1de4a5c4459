#!/usr/bin/env bash
# The student: a prior_s2t_transformer distilled from the teachers with the Proxy-Dirichlet loss, with the
# authors' speech hyper-parameters (Adam 0.9/0.98, lr 1e-4, inverse_sqrt with 4,000 warm-up updates, clip-norm 1,
# weight decay 1e-8, target concentration mkl, model and target offsets 1, 80 epochs), adapted: fairseq's S2T
# Transformer instead of their vggtransformer, the teachers' batch (MAX_TOKENS x UPDATE_FREQ frames), and the
# student starts from teacher 1 (STUDENT_INIT=none trains it from scratch as the authors did).
# Averaged over its last AVERAGE epoch checkpoints into $EXP/student_<criterion>/checkpoint_avg.pt.
# Variables: STUDENT_ARCH (prior_s2t_transformer_s), CRITERION (proxy_dirichlet_distillation; baselines:
# ensemble_kl_distillation, dirichlet_nll_distillation), STUDENT_INIT (teacher1 | none | a checkpoint),
# STUDENT_LR (1e-4), STUDENT_WARMUP (4000), STUDENT_MAX_EPOCH (80), TEACHER_DTYPE (fp32 | fp16 | bf16),
# STUDENT_EXTRA (more fairseq-train arguments), and those of common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
STUDENT_ARCH="${STUDENT_ARCH:-prior_s2t_transformer_s}"
STUDENT_INIT="${STUDENT_INIT:-teacher1}"
STUDENT_LR="${STUDENT_LR:-1e-4}"
STUDENT_WARMUP="${STUDENT_WARMUP:-4000}"
STUDENT_MAX_EPOCH="${STUDENT_MAX_EPOCH:-80}"
TEACHER_DTYPE="${TEACHER_DTYPE:-fp32}"
read -r -a EXTRA <<< "${STUDENT_EXTRA:-}"

save="$(student_dir)"
if [[ -f "$save/checkpoint_avg.pt" ]]; then echo "student: $save/checkpoint_avg.pt exists"; exit 0; fi
INIT=()
case "$STUDENT_INIT" in
    none) ;;
    teacher1) INIT=(--student-init "$(teacher_checkpoint 1)") ;;
    *) INIT=(--student-init "$STUDENT_INIT") ;;
esac
fairseq train "$DATA" --user-dir "$USER_DIR" --task speech_to_text_distillation --config-yaml config.yaml \
    --train-subset "$TRAIN_SUBSET" --valid-subset "$VALID_SUBSET" \
    --teacher-paths "$(teacher_paths)" --teacher-dtype "$TEACHER_DTYPE" ${INIT[@]+"${INIT[@]}"} \
    --arch "$STUDENT_ARCH" --share-decoder-input-output-embed \
    --criterion "$CRITERION" $([[ "$CRITERION" == proxy_dirichlet_distillation ]] && echo --target-concentration mkl --target-offset 1) \
    --model-offset 1 \
    --optimizer adam --adam-betas '(0.9, 0.98)' --lr "$STUDENT_LR" --weight-decay 1e-8 \
    --lr-scheduler inverse_sqrt --warmup-updates "$STUDENT_WARMUP" --clip-norm 1.0 \
    --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-epoch "$STUDENT_MAX_EPOCH" \
    --keep-last-epochs "$AVERAGE" --seed 0 --num-workers "$NUM_WORKERS" --save-dir "$save" \
    --log-format simple --log-interval "$LOG_INTERVAL" $DEVICE_ARGS ${EXTRA[@]+"${EXTRA[@]}"}
"$PYTHON" "$HERE/average_checkpoints.py" --save-dir "$save" --last "$AVERAGE" --output "$save/checkpoint_avg.pt"
