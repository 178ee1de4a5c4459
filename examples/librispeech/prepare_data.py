#!/usr/bin/env python3
"""LibriSpeech (or any corpus in its folder layout) -> fairseq speech-to-text data.

For every split folder ``RAW/<split>/<speaker>/<chapter>/`` with ``<speaker>-<chapter>.trans.txt`` (lines
``<utterance id> <TRANSCRIPT>``) and one audio file per utterance (``<utterance id>.flac``, or .wav/.ogg/.mp3):

* audio read with ``soundfile``, mixed down to mono, resampled to 16 kHz (``scipy.signal.resample_poly``) when
  it has another rate, scaled to 16-bit integer range as Kaldi expects;
* 80-dim log-mel filterbanks with ``kaldi-native-fbank`` (Kaldi's defaults: 25 ms Povey windows every 10 ms,
  pre-emphasis 0.97, no dither), float32 ``[frames, 80]``, stored uncompressed as ``<id>.npy`` in
  ``OUT/fbank80/<split>.zip`` (the zip + byte offset addressing fairseq reads);
* ``OUT/<split>.tsv``: fairseq's S2T manifest (``id audio n_frames tgt_text speaker``), transcripts lowercased;
* from the training splits' transcripts: a unigram sentencepiece model of ``--vocab-size`` pieces with
  fairseq's special ids (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3) and its fairseq vocabulary
  ``OUT/spm_unigram<V>.{model,txt}``;
* ``OUT/config.yaml``: vocabulary, sentencepiece model, ``audio_root``, and the feature transforms of fairseq's
  LibriSpeech recipe: utterance CMVN for every split (applied when the features are loaded, as fairseq's S2T
  recipes do), SpecAugment (its "ld" policy) for training splits.

A split whose manifest exists is skipped (re-running resumes); ``--overwrite`` redoes it. Extra sets in the same
layout (another corpus for out-of-domain evaluation) are named ``NAME=DIR`` with ``--extra``.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import struct
import sys
import tempfile
import zipfile
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np

logger = logging.getLogger("prepare_data")

SAMPLE_RATE = 16000
NUM_MEL_BINS = 80
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")
MANIFEST_COLUMNS = ["id", "audio", "n_frames", "tgt_text", "speaker"]
SPECIAL_IDS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}  # fairseq Dictionary order
#: fairseq's SpecAugment "ld" (LibriSpeech double) policy, as its S2T data tooling writes it
SPECAUGMENT_LD = {"time_wrap_W": 0, "freq_mask_N": 2, "freq_mask_F": 27, "time_mask_N": 2, "time_mask_T": 100,
                  "time_mask_p": 1.0}


class Utterance(NamedTuple):
    id: str
    audio: Path
    text: str
    speaker: str


def find_utterances(split_dir: Path) -> List[Utterance]:
    """Every utterance of a split folder in LibriSpeech layout, sorted by id. Raises ValueError naming the
    first transcript line without an audio file, or when there is no transcript at all."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no such split folder: {split_dir}")
    utterances = []
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = next((trans.parent / f"{utt_id}{ext}" for ext in AUDIO_EXTENSIONS
                          if (trans.parent / f"{utt_id}{ext}").is_file()), None)
            if audio is None:
                raise ValueError(f"{trans}:{lineno}: no audio file {utt_id}{{{','.join(AUDIO_EXTENSIONS)}}}")
            if not text.strip():
                raise ValueError(f"{trans}:{lineno}: empty transcript for {utt_id}")
            utterances.append(Utterance(utt_id, audio, text.strip(), trans.parent.parent.name))
    if not utterances:
        raise ValueError(f"{split_dir}: no <speaker>/<chapter>/*.trans.txt transcripts (LibriSpeech layout)")
    return sorted(utterances, key=lambda u: u.id)


def read_audio(path: Path) -> np.ndarray:
    """Mono waveform at 16 kHz, float64 in [-1, 1] ``[samples]``."""
    import soundfile
    from scipy.signal import resample_poly

    audio, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = np.gcd(int(rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(rate) // g)
    return audio


def fbank(audio: np.ndarray) -> np.ndarray:
    """80-dim Kaldi log-mel filterbank ``[frames, 80]`` float32 of a 16 kHz waveform in [-1, 1] (scaled to the
    16-bit range first, as Kaldi and fairseq's S2T tooling do). Frames: 25 ms every 10 ms, edges snipped."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = NUM_MEL_BINS
    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(SAMPLE_RATE, (audio * 32768.0).astype(np.float32).tolist())
    computer.input_finished()
    frames = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
    return np.asarray(frames, dtype=np.float32).reshape(-1, NUM_MEL_BINS)


def utterance_features(utt: Utterance) -> Tuple[str, bytes, int]:
    """(id, the ``.npy`` bytes of its features, frames); run in worker processes."""
    features = fbank(read_audio(utt.audio))
    if len(features) == 0:
        raise ValueError(f"{utt.audio}: shorter than one 25 ms frame")
    buffer = io.BytesIO()
    np.save(buffer, features)
    return utt.id, buffer.getvalue(), len(features)


def stored_member_offsets(zip_path: Path) -> Dict[str, Tuple[int, int]]:
    """``{member name: (byte offset of its data, size)}`` of an uncompressed zip, from each local file header
    (30 bytes + name + extra field), which is what fairseq's ``path.zip:offset:size`` addressing reads."""
    offsets = {}
    with zipfile.ZipFile(zip_path) as zf, open(zip_path, "rb") as raw:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{zip_path}:{info.filename} is compressed; fairseq reads stored members only")
            raw.seek(info.header_offset)
            header = raw.read(30)
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            offsets[info.filename] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
    return offsets


def _progress(items: Iterator, total: int, desc: str) -> Iterator:
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=desc, mininterval=10, file=sys.stderr)


def prepare_split(name: str, split_dir: Path, out: Path, jobs: int) -> List[dict]:
    """Features of one split into ``OUT/fbank80/<name>.zip`` and its manifest rows (written by the caller)."""
    utterances = find_utterances(split_dir)
    zip_path = out / "fbank80" / f"{name}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    frames: Dict[str, int] = {}
    partial = zip_path.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as zf, Pool(jobs) as pool:
        results = pool.imap(utterance_features, utterances, chunksize=16)
        for utt_id, data, n in _progress(results, len(utterances), name):
            zf.writestr(f"{utt_id}.npy", data)
            frames[utt_id] = n
    partial.replace(zip_path)
    offsets = stored_member_offsets(zip_path)
    relative = zip_path.relative_to(out).as_posix()
    return [{"id": u.id, "audio": f"{relative}:{offsets[u.id + '.npy'][0]}:{offsets[u.id + '.npy'][1]}",
             "n_frames": frames[u.id], "tgt_text": u.text.lower(), "speaker": u.speaker} for u in utterances]


def write_manifest(path: Path, rows: Sequence[dict]) -> None:
    """A fairseq S2T TSV manifest (tab separated, no quoting, header line), written atomically."""
    tmp = path.with_suffix(".tsv.partial")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, delimiter="\t", quoting=csv.QUOTE_NONE,
                                escapechar="\\", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_manifest_texts(path: Path) -> List[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row["tgt_text"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE,
                                                          escapechar="\\")]


def train_sentencepiece(texts: Sequence[str], out: Path, vocab_size: int) -> str:
    """Unigram sentencepiece model ``OUT/spm_unigram<V>.model`` with fairseq's special ids, and the fairseq
    vocabulary ``.txt`` (every piece but the four specials, which fairseq's Dictionary adds itself).
    Returns the model's file name."""
    import sentencepiece as spm

    prefix = out / f"spm_unigram{vocab_size}"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write("\n".join(texts) + "\n")
    try:
        spm.SentencePieceTrainer.train(
            input=f.name, model_prefix=str(prefix), model_type="unigram", vocab_size=vocab_size,
            character_coverage=1.0, num_threads=os.cpu_count() or 1, bos_id=SPECIAL_IDS["bos"],
            pad_id=SPECIAL_IDS["pad"], eos_id=SPECIAL_IDS["eos"], unk_id=SPECIAL_IDS["unk"],
            input_sentence_size=10_000_000, shuffle_input_sentence=True, minloglevel=2)
    finally:
        os.unlink(f.name)
    processor = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
              if i not in SPECIAL_IDS.values()]
    Path(f"{prefix}.txt").write_text("".join(f"{p} 1\n" for p in pieces), encoding="utf-8")
    return f"{prefix.name}.model"


def write_config(out: Path, spm_model: str, specaugment: bool) -> None:
    """``OUT/config.yaml`` as fairseq's S2T tooling writes it for LibriSpeech (utterance CMVN, SpecAugment "ld"
    on training splits), with ``audio_root`` = OUT so that the manifests' relative zip paths resolve."""
    import yaml

    transforms = {"*": ["utterance_cmvn"]}
    config = {"vocab_filename": spm_model.replace(".model", ".txt"), "input_feat_per_channel": NUM_MEL_BINS,
              "input_channels": 1, "audio_root": str(out.resolve()),
              "bpe_tokenizer": {"bpe": "sentencepiece", "sentencepiece_model": spm_model}}
    if specaugment:
        config["specaugment"] = dict(SPECAUGMENT_LD)
        transforms["_train"] = ["utterance_cmvn", "specaugment"]
    config["feature_transforms"] = transforms
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--raw-dir", required=True, type=Path,
                   help="folder holding the split folders (e.g. LibriSpeech/ with train-clean-100/, test-clean/, ...)")
    p.add_argument("--out", required=True, type=Path, help="fairseq S2T data folder to write")
    p.add_argument("--splits", default="train-clean-100,train-clean-360,train-other-500,dev-clean,dev-other,"
                   "test-clean,test-other", help="comma-separated split folders of --raw-dir to prepare")
    p.add_argument("--train-splits", default="train-clean-100,train-clean-360,train-other-500",
                   help="splits whose transcripts train the sentencepiece model")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=DIR",
                   help="another set in LibriSpeech layout (DIR/<speaker>/<chapter>/...), prepared as split NAME")
    p.add_argument("--vocab-size", type=int, default=5000, help="sentencepiece units (the paper's 5,000)")
    p.add_argument("--no-specaugment", action="store_true", help="no SpecAugment on training splits")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="feature extraction processes")
    p.add_argument("--overwrite", action="store_true", help="redo splits whose manifest exists")
    return p.parse_args(argv)


def split_folders(args: argparse.Namespace) -> Dict[str, Path]:
    """``{split name: folder}`` of every split to prepare, checked before any work."""
    folders = {s: args.raw_dir / s for s in args.splits.split(",") if s}
    for spec in args.extra:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--extra {spec!r}: expected NAME=DIR")
        folders[name] = Path(folder)
    missing = [str(f) for f in folders.values() if not f.is_dir()]
    if missing:
        raise FileNotFoundError(f"split folders not found: {', '.join(missing)}")
    unknown = [s for s in args.train_splits.split(",") if s and s not in folders]
    if unknown:
        raise ValueError(f"--train-splits {','.join(unknown)} are not among the splits prepared")
    return folders


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    args = parse_args(argv)
    folders = split_folders(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, folder in folders.items():
        manifest = args.out / f"{name}.tsv"
        if manifest.is_file() and not args.overwrite:
            logger.info(f"{name}: {manifest} exists, skipped")
            continue
        rows = prepare_split(name, folder, args.out, args.jobs)
        write_manifest(manifest, rows)
        hours = sum(r["n_frames"] for r in rows) / 100 / 3600
        logger.info(f"{name}: {len(rows)} utterances, {hours:.2f} h of features -> {manifest}")
    texts = [t for s in args.train_splits.split(",") if s for t in read_manifest_texts(args.out / f"{s}.tsv")]
    spm_model = train_sentencepiece(texts, args.out, args.vocab_size)
    write_config(args.out, spm_model, specaugment=not args.no_specaugment)
    logger.info(f"sentencepiece model {args.out / spm_model} ({args.vocab_size} units), {args.out / 'config.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
