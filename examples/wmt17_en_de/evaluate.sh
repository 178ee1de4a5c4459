#!/usr/bin/env bash
# Step 5 of the WMT17 En-De recipe: one proxy-end2-evaluate report per model (BLEU, OOD detection ROC-AUC of
# every measure against the in-domain set $ID_SET, prediction rejection PRR, N-best aggregation, plots), from
# its translations and, where it has them, from its reference scores; then a side-by-side summary.
#
#   bash evaluate.sh     # $REPORTS_DIR/<model>/{decode,reference}/report.{json,md}, $WORK/summary.md and .json
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

ID_SET="${ID_SET:-test}"
OOD_SETS="${OOD_SETS:-$(subsets_with_role ood | xargs)}"
EVALUATE_ARGS="${EVALUATE_ARGS:-}"            # more proxy-end2-evaluate options, e.g. "--nbest 1 5 --no-plots"
SUMMARY_NBEST="${SUMMARY_NBEST:-1}"           # the summary's N-best size and weighting (uniform | prob)
SUMMARY_WEIGHTING="${SUMMARY_WEIGHTING:-uniform}"

reports=("$WORK/summary.md")
for model in $MODELS; do reports+=("$REPORTS_DIR/$model/decode/report.json"); done
done_already "${reports[@]}" && exit 0
run evaluate "$PYTHON" "$TOOLS/evaluate_models.py" --generate-dir "$GENERATE_DIR" --reports-dir "$REPORTS_DIR" \
    --models "$MODELS" --id-set "$ID_SET" --ood-sets "$OOD_SETS" --manifest "$MANIFEST" --summary "$WORK/summary" \
    --nbest "$SUMMARY_NBEST" --weighting "$SUMMARY_WEIGHTING" -- $EVALUATE_ARGS
