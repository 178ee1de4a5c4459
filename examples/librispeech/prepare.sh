#!/usr/bin/env bash
# LibriSpeech -> fairseq speech-to-text data in $DATA (80-dim filterbanks, manifests, 5,000-unit sentencepiece
# model, config.yaml). Either downloads the archives from OpenSLR, or uses a LibriSpeech folder already on disk:
#   bash examples/librispeech/prepare.sh --download-dir /big/disk/librispeech_raw
#   bash examples/librispeech/prepare.sh --raw-dir /data/LibriSpeech      # holds train-clean-100/, test-clean/, ...
# Further arguments go to prepare_data.py (see its --help), e.g. --extra ami=/data/ami_librispeech_layout.
# Variables: DATA (output), SPLITS, TRAIN_SPLITS, VOCAB_SIZE (5000), JOBS (all cores), MIRROR.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SPLITS="${SPLITS:-train-clean-100,train-clean-360,train-other-500,dev-clean,dev-other,test-clean,test-other}"
TRAIN_SPLITS="${TRAIN_SPLITS:-train-clean-100,train-clean-360,train-other-500}"
VOCAB_SIZE="${VOCAB_SIZE:-5000}"
JOBS="${JOBS:-$(nproc)}"
MIRROR="${MIRROR:-https://www.openslr.org/resources/12}"

RAW_DIR="" DOWNLOAD_DIR="" REST=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --raw-dir) RAW_DIR="$2"; shift 2 ;;
        --download-dir) DOWNLOAD_DIR="$2"; shift 2 ;;
        *) REST+=("$1"); shift ;;
    esac
done
if [[ -z "$RAW_DIR" && -z "$DOWNLOAD_DIR" ]]; then
    echo "usage: $0 (--raw-dir LIBRISPEECH_DIR | --download-dir DIR) [prepare_data.py arguments]" >&2
    exit 2
fi

if [[ -n "$DOWNLOAD_DIR" ]]; then
    mkdir -p "$DOWNLOAD_DIR"
    if ! curl -fsSL -o "$DOWNLOAD_DIR/md5sum.txt" "$MIRROR/md5sum.txt"; then
        echo "warning: no md5sum.txt at $MIRROR: the archives are not checked" >&2
        : > "$DOWNLOAD_DIR/md5sum.txt"
    fi
    for split in ${SPLITS//,/ }; do
        if [[ -d "$DOWNLOAD_DIR/LibriSpeech/$split" ]]; then continue; fi
        echo "downloading $split from $MIRROR"
        curl -fL -C - --retry 5 -o "$DOWNLOAD_DIR/$split.tar.gz" "$MIRROR/$split.tar.gz"
        if grep -q " $split.tar.gz\$" "$DOWNLOAD_DIR/md5sum.txt"; then
            (cd "$DOWNLOAD_DIR" && grep " $split.tar.gz\$" md5sum.txt | md5sum -c -)
        else
            echo "warning: no MD5 sum for $split.tar.gz in md5sum.txt: not checked" >&2
        fi
        tar -xzf "$DOWNLOAD_DIR/$split.tar.gz" -C "$DOWNLOAD_DIR"   # -> LibriSpeech/<split>/...
        rm "$DOWNLOAD_DIR/$split.tar.gz"
    done
    RAW_DIR="$DOWNLOAD_DIR/LibriSpeech"
fi

"$PYTHON" "$HERE/prepare_data.py" --raw-dir "$RAW_DIR" --out "$DATA" --splits "$SPLITS" \
    --train-splits "$TRAIN_SPLITS" --vocab-size "$VOCAB_SIZE" --jobs "$JOBS" ${REST[@]+"${REST[@]}"}
