#!/usr/bin/env bash
# Step 1 of the WMT17 En-De recipe: data. Raw text -> Moses punctuation normalisation -> joint sentencepiece
# model (BPE, 40k) -> length cleaning of the training pairs -> fairseq-preprocess, plus the out-of-domain sets.
#
#   bash prepare.sh                                   # download the WMT17 archives into $RAW_DIR, then prepare
#   bash prepare.sh --raw-dir DIR                     # the archives are already in DIR (README: names)
#   bash prepare.sh --train-prefix P --valid-prefix P --test-prefix P[,P2,...] [--ood NAME=FILE ...]
#                                                     # your own corpus: P.$SRC / P.$TGT, one sentence per line
#   options of both layouts: --librispeech PATH (LibriSpeech test-clean.tar.gz, its folder, or a transcript file)
#
# Output: $DATA_BIN (binarised splits, dict.$SRC.txt, dict.$TGT.txt, spm.model, and sets.tsv, the manifest of
# the evaluation sets written last). Each stage is skipped when its output exists; see README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

SPM_VOCAB="${SPM_VOCAB:-40000}"                 # joint sentencepiece vocabulary (upper bound)
SPM_MODEL_TYPE="${SPM_MODEL_TYPE:-bpe}"
SPM_CHARACTER_COVERAGE="${SPM_CHARACTER_COVERAGE:-1.0}"
SPM_SENTENCES="${SPM_SENTENCES:-10000000}"      # training sentences sampled to learn the pieces
SPM_MODEL="${SPM_MODEL:-}"                      # an existing sentencepiece model to use instead (an ensemble's own)
SRC_DICT="${SRC_DICT:-}"                        # existing fairseq dictionaries to binarise with (an ensemble's own)
TGT_DICT="${TGT_DICT:-}"
CLEAN_RATIO="${CLEAN_RATIO:-1.5}"               # clean-corpus-n on the pieces, as the authors (ratio 1.5, 1..250)
CLEAN_MIN="${CLEAN_MIN:-1}"
CLEAN_MAX="${CLEAN_MAX:-250}"
PERMUTE_SEED="${PERMUTE_SEED:-1}"
LIBRISPEECH="${LIBRISPEECH:-}"                  # default: $RAW_DIR/test-clean.tar.gz or $RAW_DIR/LibriSpeech if present
DOWNLOAD_LIBRISPEECH="${DOWNLOAD_LIBRISPEECH:-0}"   # 1: download test-clean.tar.gz (audio, a few hundred MB) for its transcripts

TRAIN_PREFIX="" VALID_PREFIX="" TEST_PREFIX="" OOD_SPECS=() RAW_GIVEN=0
while (( $# )); do
    case "$1" in
        --raw-dir) RAW_DIR="$2"; RAW_GIVEN=1; shift 2 ;;
        --train-prefix) TRAIN_PREFIX="$2"; shift 2 ;;
        --valid-prefix) VALID_PREFIX="$2"; shift 2 ;;
        --test-prefix) TEST_PREFIX="$2"; shift 2 ;;
        --ood) OOD_SPECS+=("$2"); shift 2 ;;
        --librispeech) LIBRISPEECH="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

done_already "$MANIFEST" && exit 0

RAW_TEXT="$TEXT/raw" NORM="$TEXT/norm" PIECES="$TEXT/spm"
SETS_TMP="$RAW_TEXT.tmp/sets.tsv"   # subset, role, description, raw source, raw reference ("-": none)

# ------------------------------------------------------------------------------------------------ checks
check_pair() {  # PREFIX: both sides exist and have the same number of lines
    local a="$1.$SRC" b="$1.$TGT"
    [[ -f "$a" && -f "$b" ]] || die "--*-prefix $1: need $a and $b"
    [[ $(wc -l <"$a") == $(wc -l <"$b") ]] || die "$a and $b differ in length ($(wc -l <"$a") vs $(wc -l <"$b") lines)"
}
if [[ -n "$TRAIN_PREFIX$VALID_PREFIX$TEST_PREFIX" ]]; then
    LAYOUT=plain
    [[ -n "$TRAIN_PREFIX" && -n "$VALID_PREFIX" && -n "$TEST_PREFIX" ]] || die "the plain-text layout needs --train-prefix, --valid-prefix and --test-prefix"
    for p in "$TRAIN_PREFIX" "$VALID_PREFIX" ${TEST_PREFIX//,/ }; do check_pair "$p"; done
else
    LAYOUT=wmt
    [[ "$SRC-$TGT" == en-de ]] || die "the WMT layout is English-German (SRC=en TGT=de); use the plain-text layout for $SRC-$TGT"
    (( ${#OOD_SPECS[@]} == 0 )) || die "--ood is for the plain-text layout (the WMT layout builds the paper's sets)"
fi
for spec in "${OOD_SPECS[@]}"; do
    [[ "$spec" == *=* && -f "${spec#*=}" ]] || die "--ood $spec: expected NAME=FILE with an existing FILE"
done
if [[ -z "$LIBRISPEECH" ]]; then
    for candidate in "$RAW_DIR/test-clean.tar.gz" "$RAW_DIR/LibriSpeech"; do
        [[ -e "$candidate" ]] && { LIBRISPEECH="$candidate"; break; }
    done
fi
[[ -z "$LIBRISPEECH" || -e "$LIBRISPEECH" ]] || die "--librispeech $LIBRISPEECH: no such file or folder"
[[ -z "$SPM_MODEL" || -f "$SPM_MODEL" ]] || die "SPM_MODEL=$SPM_MODEL: no such file"
[[ -z "$SRC_DICT$TGT_DICT" || ( -f "$SRC_DICT" && -f "$TGT_DICT" ) ]] || die "SRC_DICT and TGT_DICT: give both, as existing files"

# ------------------------------------------------------------------------------------------------ 1. raw text
download() {  # URL FILE [MD5]: into $RAW_DIR unless there
    local url="$1" file="$RAW_DIR/$2" md5="${3:-}"
    [[ -f "$file" ]] && return 0
    mkdir -p "$RAW_DIR"
    log "downloading $url -> $file"
    if command -v curl >/dev/null; then curl -fL --retry 3 -o "$file.part" "$url"; else wget -O "$file.part" "$url"; fi
    if [[ -n "$md5" ]]; then echo "$md5  $file.part" | md5sum -c --quiet - || die "$url: checksum mismatch"; fi
    mv "$file.part" "$file"
}

add_set() {  # NAME ROLE DESCRIPTION SOURCE_FILE REFERENCE_FILE_OR_- : raw NAME.$SRC / NAME.$TGT in the temp dir
    local name="$1" role="$2" description="$3" src="$4" ref="$5" out="$RAW_TEXT.tmp"
    cp "$src" "$out/$name.$SRC"
    if [[ "$ref" == - ]]; then cp "$src" "$out/$name.$TGT"; else cp "$ref" "$out/$name.$TGT"; fi
    local raw_ref="-"
    [[ "$ref" == - ]] || raw_ref="$RAW_TEXT/$name.$TGT"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$role" "$description" "$RAW_TEXT/$name.$SRC" "$raw_ref" >>"$SETS_TMP"
}

wmt_raw_text() {
    if (( ! RAW_GIVEN )); then
        download https://statmt.org/wmt13/training-parallel-europarl-v7.tgz training-parallel-europarl-v7.tgz
        download https://statmt.org/wmt13/training-parallel-commoncrawl.tgz training-parallel-commoncrawl.tgz
        download https://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz training-parallel-nc-v12.tgz
        download https://data.statmt.org/wmt17/translation-task/rapid2016.tgz rapid2016.tgz
        download https://statmt.org/wmt13/test.tgz wmt13-test.tgz 48eca5d02f637af44e85186847141f67
        download https://statmt.org/wmt14/test-full.tgz test-full.tgz a8cd784e006feb32ac6f3d9ec7eb389a
        download https://data.statmt.org/wmt17/translation-task/test.tgz test.tgz 86a1724c276004aa25455ae2a04cef26
        if [[ "$DOWNLOAD_LIBRISPEECH" == 1 && -z "$LIBRISPEECH" ]]; then
            download https://www.openslr.org/resources/12/test-clean.tar.gz test-clean.tar.gz
            LIBRISPEECH="$RAW_DIR/test-clean.tar.gz"
        fi
    fi
    local x="$TEXT/extracted"
    run prepare "$PYTHON" "$TOOLS/wmt_archives.py" --raw-dir "$RAW_DIR" --out-dir "$x"
    mv "$x/train.en" "$x/train.de" "$RAW_TEXT.tmp/"
    add_set valid valid "newstest2013" "$x/valid.en" "$x/valid.de"
    add_set test test "newstest2014 (full, in-domain)" "$x/test.en" "$x/test.de"
    add_set test2017 test "newstest2017" "$x/test2017.en" "$x/test2017.de"
    "$PYTHON" "$TOOLS/ood_sets.py" permute --seed "$PERMUTE_SEED" "$x/test.en" "$x/test-permuted.en"
    add_set ood_perm ood "newstest2014, source words shuffled" "$x/test-permuted.en" "$x/test.de"
    add_set ood_de ood "newstest2014 German side as source" "$x/test.de" -
    add_set ood_fr ood "newstest2014 fr-en French side as source" "$x/newstest2014.fr" -
    rm -rf "$x"
}

plain_raw_text() {
    local out="$RAW_TEXT.tmp" i=0 prefix name
    cp "$TRAIN_PREFIX.$SRC" "$out/train.$SRC"
    cp "$TRAIN_PREFIX.$TGT" "$out/train.$TGT"
    add_set valid valid "$(basename "$VALID_PREFIX")" "$VALID_PREFIX.$SRC" "$VALID_PREFIX.$TGT"
    for prefix in ${TEST_PREFIX//,/ }; do
        name=test; (( i > 0 )) && name="test$i"
        add_set "$name" test "$(basename "$prefix")$( (( i == 0 )) && echo ' (in-domain)')" "$prefix.$SRC" "$prefix.$TGT"
        i=$((i + 1))
    done
    local first="${TEST_PREFIX%%,*}"
    "$PYTHON" "$TOOLS/ood_sets.py" permute --seed "$PERMUTE_SEED" "$first.$SRC" "$out/permuted.tmp"
    add_set ood_perm ood "$(basename "$first"), source words shuffled" "$out/permuted.tmp" "$first.$TGT"
    add_set "ood_$TGT" ood "$(basename "$first") $TGT side as source" "$first.$TGT" -
    for spec in "${OOD_SPECS[@]}"; do add_set "ood_${spec%%=*}" ood "${spec#*=}" "${spec#*=}" -; done
    rm -f "$out/permuted.tmp"
}

if ! done_already "$RAW_TEXT"; then
    rm -rf "$RAW_TEXT.tmp"; mkdir -p "$RAW_TEXT.tmp"
    if [[ "$LAYOUT" == wmt ]]; then wmt_raw_text; else plain_raw_text; fi
    if [[ -n "$LIBRISPEECH" ]]; then
        "$PYTHON" "$TOOLS/ood_sets.py" librispeech "$LIBRISPEECH" "$RAW_TEXT.tmp/librispeech.tmp"
        add_set ood_librispeech ood "LibriSpeech test-clean transcripts as source" "$RAW_TEXT.tmp/librispeech.tmp" -
        rm -f "$RAW_TEXT.tmp/librispeech.tmp"
    fi
    mv "$RAW_TEXT.tmp" "$RAW_TEXT"
fi
SUBSETS=($(cut -f1 "$RAW_TEXT/sets.tsv"))
log "sets: ${SUBSETS[*]} ($(wc -l <"$RAW_TEXT/train.$SRC") training pairs before cleaning)"

# ------------------------------------------------------------------------------------------------ 2. normalise
files() {  # LANG: the raw (or normalised) files of every set in language LANG
    local dir="$1" lang="$2" name
    for name in train "${SUBSETS[@]}"; do echo "$dir/$name.$lang"; done
}
for lang in "$SRC" "$TGT"; do
    done_already $(files "$NORM" "$lang") || run prepare "$PYTHON" "$TOOLS/normalise.py" --lang "$lang" \
        --out-dir "$NORM" --workers "$WORKERS" $(files "$RAW_TEXT" "$lang")
done

# ------------------------------------------------------------------------------------------------ 3. sentencepiece
mkdir -p "$PIECES"
if [[ -n "$SPM_MODEL" && ! -e "$PIECES/spm.model" ]]; then
    cp "$SPM_MODEL" "$PIECES/spm.model.tmp" && mv "$PIECES/spm.model.tmp" "$PIECES/spm.model"
fi
done_already "$PIECES/spm.model" || run prepare "$PYTHON" "$TOOLS/sentencepiece_model.py" train \
    --model-prefix "$PIECES/spm" --vocab-size "$SPM_VOCAB" --model-type "$SPM_MODEL_TYPE" \
    --character-coverage "$SPM_CHARACTER_COVERAGE" --input-sentence-size "$SPM_SENTENCES" --threads "$WORKERS" \
    "$NORM/train.$SRC" "$NORM/train.$TGT"
done_already $(files "$PIECES" "$SRC") $(files "$PIECES" "$TGT") || run prepare "$PYTHON" \
    "$TOOLS/sentencepiece_model.py" encode --model "$PIECES/spm.model" --out-dir "$PIECES" --threads "$WORKERS" \
    $(files "$NORM" "$SRC") $(files "$NORM" "$TGT")
done_already "$PIECES/train.clean.$SRC" "$PIECES/train.clean.$TGT" || run prepare "$PYTHON" \
    "$TOOLS/clean_corpus.py" --ratio "$CLEAN_RATIO" --min "$CLEAN_MIN" --max "$CLEAN_MAX" \
    "$PIECES/train" "$PIECES/train.clean" "$SRC" "$TGT"

# ------------------------------------------------------------------------------------------------ 4. binarise
tests=()
for name in "${SUBSETS[@]:1}"; do tests+=("$PIECES/$name"); done
rm -rf "$DATA_BIN.tmp"
dicts=()
[[ -n "$SRC_DICT" ]] && dicts=(--srcdict "$SRC_DICT" --tgtdict "$TGT_DICT")
run prepare $FAIRSEQ_PREPROCESS --source-lang "$SRC" --target-lang "$TGT" --trainpref "$PIECES/train.clean" \
    --validpref "$PIECES/valid" --testpref "$(IFS=,; echo "${tests[*]}")" --destdir "$DATA_BIN.tmp" \
    --workers "$WORKERS" "${dicts[@]}"
i=0
for name in "${SUBSETS[@]:1}"; do  # fairseq names the --testpref splits test, test1, test2, ...
    split=test; (( i > 0 )) && split="test$i"
    if [[ "$split" != "$name" ]]; then
        for f in "$DATA_BIN.tmp/$split.$SRC-$TGT".*; do mv "$f" "${f/\/$split./\/$name.}"; done
    fi
    i=$((i + 1))
done
cp "$PIECES/spm.model" "$DATA_BIN.tmp/"
{ printf '#subset\trole\tdescription\traw_source\traw_reference\n'; cat "$RAW_TEXT/sets.tsv"; } >"$DATA_BIN.tmp/sets.tsv"
rm -rf "$DATA_BIN" && mv "$DATA_BIN.tmp" "$DATA_BIN"
log "data ready in $DATA_BIN: $(wc -l <"$PIECES/train.clean.$SRC") training pairs, K = $(( $(wc -l <"$DATA_BIN/dict.$TGT.txt") + 4 )) target classes; sets: ${SUBSETS[*]}"
