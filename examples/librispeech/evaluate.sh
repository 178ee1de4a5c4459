#!/usr/bin/env bash
# One proxy-end2-evaluate report per model in $EXP/reports/<model>/ (report.md, report.json, plots/): WER,
# OOD detection of every other set of TEST_SETS against ID_SET (test-other against test-clean, and any extra
# set), sequence error detection (PRR with sentence WER), token-level error detection (TOKEN_UNIT: word or
# piece) and N-best aggregation (NBEST_SIZES, default "1 $NBEST"). EVAL_EXTRA: more proxy-end2-evaluate arguments
# (e.g. --no-plots).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MODELS="${MODELS:-student ensemble teacher1}"
TEST_SETS="${TEST_SETS:-test-clean test-other}"
ID_SET="${ID_SET:-test-clean}"
NBEST="${NBEST:-20}"
NBEST_SIZES="${NBEST_SIZES:-1 $NBEST}"
TOKEN_UNIT="${TOKEN_UNIT:-word}"
read -r -a EXTRA <<< "${EVAL_EXTRA:-}"

spm_model="$(ls "$DATA"/spm_unigram*.model | head -n 1)"
for model in $MODELS; do
    gen="$EXP/generate/$model"
    args=(--id "$ID_SET=$gen/$ID_SET/generate-$ID_SET.txt")
    for set in $TEST_SETS; do
        [[ "$set" == "$ID_SET" ]] || args+=(--ood "$set=$gen/$set/generate-$set.txt")
    done
    read -r -a sizes <<< "$NBEST_SIZES"
    "$PYTHON" -m proxy_end2.evaluation.cli "${args[@]}" --quality wer --nbest "${sizes[@]}" \
        --token-errors --token-error-unit "$TOKEN_UNIT" --sentencepiece-model "$spm_model" \
        --out "$EXP/reports/$model" --quiet ${EXTRA[@]+"${EXTRA[@]}"}
    echo "$model: $EXP/reports/$model/report.md"
done
