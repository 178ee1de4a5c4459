#!/usr/bin/env bash
# Recognise the test sets with uncertainty: for every model of MODELS (student, ensemble = all teachers,
# teacher1) and every set of TEST_SETS, fairseq-generate writes $EXP/generate/<model>/<set>/generate-<set>.txt
# (fairseq's lines; WER on its last line) and uncertainty-<set>.txt (SU-/TU- lines, docs/output-format.md).
# Variables: MODELS ("student ensemble teacher1"), TEST_SETS ("test-clean test-other" + any --extra set of
# prepare.sh), BEAM (20) and NBEST (20) as the authors, GEN_MAX_TOKENS (50000 frames), GEN_EXTRA.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MODELS="${MODELS:-student ensemble teacher1}"
TEST_SETS="${TEST_SETS:-test-clean test-other}"
BEAM="${BEAM:-20}"
NBEST="${NBEST:-20}"
GEN_MAX_TOKENS="${GEN_MAX_TOKENS:-50000}"
read -r -a EXTRA <<< "${GEN_EXTRA:-}"

for model in $MODELS; do
    case "$model" in
        student) path="$(student_dir)/checkpoint_avg.pt" ;;
        ensemble) path="$(teacher_paths)" ;;
        teacher*) path="$(teacher_checkpoint "${model#teacher}")" ;;
        *) echo "unknown model $model (student, ensemble, teacher<i>)" >&2; exit 2 ;;
    esac
    for set in $TEST_SETS; do
        out="$EXP/generate/$model/$set"
        if [[ -s "$out/generate-$set.txt" ]] && tail -n 1 "$out/generate-$set.txt" | grep -q "^Generate "; then
            echo "$model $set: $out/generate-$set.txt exists"; continue
        fi
        fairseq generate "$DATA" --user-dir "$USER_DIR" --task speech_to_text_distillation \
            --config-yaml config.yaml --gen-subset "$set" --path "$path" --beam "$BEAM" --nbest "$NBEST" \
            --max-tokens "$GEN_MAX_TOKENS" --scoring wer --results-path "$out" $DEVICE_ARGS \
            ${EXTRA[@]+"${EXTRA[@]}"}
        echo "$model $set: $(tail -n 1 "$out/generate-$set.txt")"
    done
done
