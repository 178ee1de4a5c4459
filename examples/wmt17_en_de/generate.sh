#!/usr/bin/env bash
# Step 4 of the WMT17 En-De recipe: translations with uncertainty, and reference scoring.
# Every model of $MODELS (default: the ensemble, its first member alone, every student of $CRITERIA) translates
# every test and out-of-domain set (beam 5, 5-best, SU-/TU- uncertainty lines, sentencepiece removed); the
# models of $REFERENCE_MODELS (default: the ensemble and the students) also score the references
# (--score-reference, with uncertainty). Then sacrebleu BLEU of the detokenised top hypotheses against the raw
# reference files. On GPUs the models are shared out over them, one process per GPU running side by side.
#
#   bash generate.sh           # $GENERATE_DIR/<model>/{decode,reference}/generate-<set>.txt, uncertainty-<set>.txt,
#                              # decode/bleu-<set>.json
#
# A set whose generate-<set>.txt exists is skipped (outputs are moved into place when complete).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

REFERENCE_MODELS="${REFERENCE_MODELS:-ensemble$STUDENT_MODELS}"
GEN_SETS="${GEN_SETS:-$(subsets_with_role test | xargs) $(subsets_with_role ood | xargs)}"
REFERENCE_SETS="${REFERENCE_SETS:-$GEN_SETS}"
BEAM="${BEAM:-5}"
NBEST="${NBEST:-5}"
GEN_MAX_TOKENS="${GEN_MAX_TOKENS:-4096}"
GENERATE_FP16="${GENERATE_FP16:-0}"   # fp32 by default: fp16 logits would perturb the Dirichlet concentrations
POST_PROCESS="${POST_PROCESS:-sentencepiece}"   # fairseq's --post-process: how the D- lines are detokenised
GEN_EXTRA_ARGS="${GEN_EXTRA_ARGS:-}"

model_path() {  # MODEL -> fairseq --path
    case "$1" in
        ensemble) teacher_paths ;;
        teacher*) local i="${1#teacher}" t; IFS=: read -r -a t <<<"$(teacher_paths)"; echo "${t[$((i - 1))]}" ;;
        student_*) echo "$STUDENTS_DIR/${1#student_}.pt" ;;
        *) die "unknown model $1 (ensemble, teacher<i>, student_<criterion>)" ;;
    esac
}
for model in $MODELS; do  # every checkpoint there before anything runs
    path="$(model_path "$model")"
    IFS=: read -r -a paths <<<"$path"
    for p in "${paths[@]}" ""; do
        [[ -z "$p" && ${#paths[@]} -gt 0 ]] && continue
        [[ -f "$p" ]] || die "$model: checkpoint '$p' not found (train_teachers.sh / distill.sh first)"
    done
done

outputs() {  # MODEL...: the files generate.sh writes for these models
    local model subset
    for model in "$@"; do
        for subset in $GEN_SETS; do
            echo "$GENERATE_DIR/$model/decode/generate-$subset.txt"
            [[ "$(manifest_field "$subset" 5)" == - ]] || echo "$GENERATE_DIR/$model/decode/bleu-$subset.json"
        done
        if [[ " $REFERENCE_MODELS " == *" $model "* ]]; then
            for subset in $REFERENCE_SETS; do echo "$GENERATE_DIR/$model/reference/generate-$subset.txt"; done
        fi
    done
}

generate_group() {  # GPU MODEL...: the models one after the other in one process (on GPU GPU, if not empty)
    local gpu=() fp16=() specs=() model subset ref bleu=()
    [[ -n "$1" ]] && gpu=(env CUDA_VISIBLE_DEVICES="$1")
    shift
    done_already $(outputs "$@") && return 0
    (( GENERATE_FP16 && NUM_GPUS > 0 )) && fp16=(--fp16)
    for model in "$@"; do specs+=(--model "$model=$(model_path "$model")"); done
    run "generate_$1" "${gpu[@]}" "$PYTHON" "$TOOLS/generate_sets.py" --out "$GENERATE_DIR" "${specs[@]}" \
        --sets "${GEN_SETS// /,}" --reference-models "${REFERENCE_MODELS// /,}" --reference-sets "${REFERENCE_SETS// /,}" \
        -- "$DATA_BIN" --user-dir "$USER_DIR" --task translation_distillation -s "$SRC" -t "$TGT" \
        --beam "$BEAM" --nbest "$NBEST" --max-tokens "$GEN_MAX_TOKENS" --post-process "$POST_PROCESS" \
        "${fp16[@]}" "${DEVICE_FLAGS[@]}" $GEN_EXTRA_ARGS || return 1
    for model in "$@"; do  # sacrebleu against the raw references, where the set has one
        for subset in $GEN_SETS; do
            ref="$(manifest_field "$subset" 5)"
            [[ "$ref" == - ]] || bleu+=("$GENERATE_DIR/$model/decode/generate-$subset.txt" "$ref" \
                                       "$GENERATE_DIR/$model/decode/bleu-$subset.json")
        done
    done
    (( ${#bleu[@]} == 0 )) || run "generate_$1" "$PYTHON" "$TOOLS/bleu.py" "${bleu[@]}"
}

log "models: $MODELS; sets: $GEN_SETS; reference scoring: $REFERENCE_MODELS on $REFERENCE_SETS; ${NUM_GPUS} GPU(s)"
read -r -a models <<<"$MODELS"
if (( NUM_GPUS > 0 )); then  # model k on GPU k mod NUM_GPUS, the GPUs side by side
    pids=()
    for ((g = 0; g < NUM_GPUS && g < ${#models[@]}; g++)); do
        group=()
        for ((k = g; k < ${#models[@]}; k += NUM_GPUS)); do group+=("${models[$k]}"); done
        generate_group "${GPU_IDS[$g]}" "${group[@]}" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "generation failed (logs: $LOGS/generate_*.log)"; done
else
    generate_group "" "${models[@]}" || die "generation failed (log: $LOGS/generate_${models[0]}.log)"
fi
log "generations in $GENERATE_DIR"
