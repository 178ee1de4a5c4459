"""examples/librispeech/prepare_data.py on small synthetic audio (tones written as FLAC/WAV in the LibriSpeech
layout): filterbanks, resampling, zip addressing read back by fairseq, manifests, sentencepiece, config,
resumption and input errors. The spoken end-to-end run is tests/examples/test_librispeech_recipe.py."""
from __future__ import annotations

import csv
import math
import os
import sys

import numpy as np
import pytest
import soundfile

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "examples" / "librispeech"))
import prepare_data  # noqa: E402

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()


def _tone(freq: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * freq * t)


def _write_split(root, split, n, rate=16000, ext=".flac", seed=0):
    rng = np.random.default_rng(seed)
    folder = root / split / "19" / "198"
    folder.mkdir(parents=True)
    lines = []
    for k in range(n):
        utt = f"19-198-{k:04d}"
        soundfile.write(str(folder / f"{utt}{ext}"), _tone(200 + 100 * k, 0.5 + 0.1 * k, rate), rate)
        lines.append(f"{utt} " + " ".join(rng.choice(WORDS, 6)).upper())
    (folder / "19-198.trans.txt").write_text("\n".join(lines) + "\n")


def _manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))


def test_fbank_frames_and_a_tone_in_its_mel_bin():
    """25 ms frames every 10 ms; a 1 kHz tone has most energy in the mel bin centred nearest 1 kHz (80 bins
    equally spaced on the mel scale between 20 Hz and 8 kHz, Kaldi's defaults)."""
    audio = _tone(1000.0, 1.0)
    features = prepare_data.fbank(audio)
    assert features.shape == (1 + (16000 - 400) // 160, 80) and features.dtype == np.float32

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    centres = [mel(20) + (i + 1) * (mel(8000) - mel(20)) / 81 for i in range(80)]
    expected = int(np.argmin([abs(c - mel(1000)) for c in centres]))
    assert int(np.argmax(features.mean(0))) == expected


def test_prepare_splits_resample_and_read_back_with_fairseq(tmp_path):
    from fairseq.data.audio.audio_utils import get_features_or_waveform
    from fairseq.data.audio.data_cfg import S2TDataConfig

    raw, out = tmp_path / "raw", tmp_path / "data"
    _write_split(raw, "train-clean-100", 12)
    _write_split(raw, "test-clean", 3, rate=22050, ext=".wav", seed=1)  # another rate and format: resampled
    args = ["--raw-dir", str(raw), "--out", str(out), "--splits", "train-clean-100,test-clean",
            "--train-splits", "train-clean-100", "--vocab-size", "30", "--jobs", "1"]
    assert prepare_data.main(args) == 0
    config = S2TDataConfig(out / "config.yaml")
    assert config.vocab_filename == "spm_unigram30.txt" and len((out / "spm_unigram30.txt").read_text().split("\n")) == 27
    assert config.bpe_tokenizer["sentencepiece_model"] == str(out / "spm_unigram30.model")
    rows = _manifest(out / "test-clean.tsv")
    assert [r["id"] for r in rows] == ["19-198-0000", "19-198-0001", "19-198-0002"]
    assert rows[0]["tgt_text"] == rows[0]["tgt_text"].lower() and rows[0]["speaker"] == "19"
    for k, row in enumerate(rows):
        features = get_features_or_waveform(os.path.join(config.audio_root, row["audio"]))
        samples = int((0.5 + 0.1 * k) * 16000)  # after resampling 22.05 kHz -> 16 kHz
        assert features.shape == (int(row["n_frames"]), 80) and abs(features.shape[0] - (1 + (samples - 400) // 160)) <= 1
    wav = raw / "test-clean" / "19" / "198" / "19-198-0001.wav"
    np.testing.assert_array_equal(get_features_or_waveform(os.path.join(config.audio_root, rows[1]["audio"])),
                                  prepare_data.fbank(prepare_data.read_audio(wav)))
    # re-running skips the prepared splits (their manifests exist)
    before = (out / "test-clean.tsv").stat().st_mtime_ns
    assert prepare_data.main(args) == 0
    assert (out / "test-clean.tsv").stat().st_mtime_ns == before


def test_bad_inputs_fail_before_any_work(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "data"
    _write_split(raw, "test-clean", 2)
    with pytest.raises(FileNotFoundError, match="dev-clean"):
        prepare_data.main(["--raw-dir", str(raw), "--out", str(out), "--splits", "test-clean,dev-clean",
                           "--train-splits", "test-clean"])
    with pytest.raises(ValueError, match="--train-splits train-clean-100"):
        prepare_data.main(["--raw-dir", str(raw), "--out", str(out), "--splits", "test-clean"])
    with pytest.raises(ValueError, match="NAME=DIR"):
        prepare_data.main(["--raw-dir", str(raw), "--out", str(out), "--splits", "test-clean",
                           "--train-splits", "test-clean", "--extra", str(raw)])
    assert not out.exists()
    (raw / "test-clean" / "19" / "198" / "19-198-0001.flac").unlink()
    with pytest.raises(ValueError, match=r"19-198\.trans\.txt:2: no audio file 19-198-0001"):
        prepare_data.find_utterances(raw / "test-clean")
