"""The LibriSpeech recipe (examples/librispeech/*.sh) end to end, offline, on real speech: a tiny corpus in the
LibriSpeech layout spoken by espeak-ng (two English voices), an out-of-domain test-other spoken by a French
voice, faster; tiny architectures on the CPU: prepare.sh, train_teachers.sh, distill.sh, generate.sh (student
and ensemble, with uncertainty), evaluate.sh (WER, OOD detection, PRR, token-level error detection)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from conftest import REPO_ROOT
from speech_data import TINY_S2T_MODEL

RECIPE = REPO_ROOT / "examples" / "librispeech"
sys.path.insert(0, str(RECIPE))

SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "her brother"]
VERBS = ["sees", "likes", "finds", "calls", "helps"]
OBJECTS = ["the house", "a red car", "the old man", "some green trees", "the small boat"]
#: split -> (utterances, espeak-ng voices (one speaker each), words per minute)
SPLITS = {"train-clean-100": (48, ["en-us", "en-gb"], 160), "dev-clean": (8, ["en-us", "en-gb"], 160),
          "test-clean": (12, ["en-us", "en-gb"], 160), "test-other": (12, ["fr"], 230)}
VOCAB_SIZE = 40  # sentencepiece allows at most 44 units on this corpus


def _ensure_espeak_ng() -> str:
    """The espeak-ng binary; installed with apt-get when missing (CI runs as root), else the test is skipped."""
    found = shutil.which("espeak-ng")
    if found:
        return found
    for cmd in (["apt-get", "install", "-y", "espeak-ng"], ["apt-get", "update"],
                ["apt-get", "install", "-y", "espeak-ng"]):
        subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if shutil.which("espeak-ng"):
            return shutil.which("espeak-ng")
    pytest.skip("espeak-ng is not installed and `apt-get install -y espeak-ng` failed (not root, or offline)")


def _speak(espeak: str, text: str, voice: str, wpm: int, path: Path) -> None:
    """``text`` spoken by espeak-ng, written as a 16 kHz 16-bit FLAC (LibriSpeech's format)."""
    import soundfile
    from scipy.signal import resample_poly

    wav = path.with_suffix(".wav")
    subprocess.run([espeak, "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True, capture_output=True)
    audio, rate = soundfile.read(str(wav), dtype="float64")
    g = np.gcd(rate, 16000)
    soundfile.write(str(path), resample_poly(audio, 16000 // g, rate // g), 16000, subtype="PCM_16")
    wav.unlink()


def make_spoken_corpus(root: Path, espeak: str, seed: int = 0) -> Dict[str, List[str]]:
    """``root/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<k>.flac`` + ``.trans.txt`` (upper-case
    transcripts, as LibriSpeech's); returns each split's transcripts."""
    rng = np.random.default_rng(seed)
    texts: Dict[str, List[str]] = {}
    for s, (split, (count, voices, wpm)) in enumerate(SPLITS.items()):
        texts[split] = []
        for v, voice in enumerate(voices):
            speaker, chapter = str(100 * (s + 1) + v), str(1000 + s)
            folder = root / split / speaker / chapter
            folder.mkdir(parents=True)
            lines = []
            for k in range(count // len(voices)):
                text = " ".join([SUBJECTS[rng.integers(5)], VERBS[rng.integers(5)], OBJECTS[rng.integers(5)]])
                utt = f"{speaker}-{chapter}-{k:04d}"
                _speak(espeak, text, voice, wpm, folder / f"{utt}.flac")
                lines.append(f"{utt} {text.upper()}")
                texts[split].append(text)
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return texts


def _recipe_env(data: Path, exp: Path) -> Dict[str, str]:
    tiny = " ".join(TINY_S2T_MODEL)
    return dict(
        os.environ, PYTHON=sys.executable, DATA=str(data), EXP=str(exp), DEVICE_ARGS="--cpu",
        SPLITS=",".join(SPLITS), TRAIN_SPLITS="train-clean-100", VOCAB_SIZE=str(VOCAB_SIZE), JOBS="2",
        TRAIN_SUBSET="train-clean-100", VALID_SUBSET="dev-clean", NUM_TEACHERS="2", MAX_TOKENS="20000",
        UPDATE_FREQ="1", NUM_WORKERS="0", AVERAGE="2", LOG_INTERVAL="5",
        TEACHER_ARCH="s2t_transformer_xs", TEACHER_LR="3e-3", TEACHER_WARMUP="10",
        TEACHER_EXTRA=f"{tiny} --max-epoch 4 --dropout 0.0",
        STUDENT_ARCH="prior_s2t_transformer_xs", STUDENT_LR="1e-3", STUDENT_WARMUP="5", STUDENT_MAX_EPOCH="2",
        STUDENT_EXTRA=f"{tiny} --dropout 0.0",
        MODELS="student ensemble", TEST_SETS="test-clean test-other", BEAM="3", NBEST="3", GEN_MAX_TOKENS="20000",
        EVAL_EXTRA="--no-plots",
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
    )


def _run(script: str, env: Dict[str, str], log: Path, *args: str) -> str:
    proc = subprocess.run(["bash", str(RECIPE / script), *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    log.write_text(proc.stdout)
    assert proc.returncode == 0, f"{script} failed (exit {proc.returncode}); log {log}:\n{proc.stdout[-4000:]}"
    return proc.stdout


def _manifest(path: Path) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))


def _check_data(data: Path, raw: Path, texts: Dict[str, List[str]]) -> None:
    """Manifests, vocabulary and config as fairseq reads them; features equal a fresh computation."""
    from fairseq.data.audio.audio_utils import get_features_or_waveform
    from fairseq.data.audio.data_cfg import S2TDataConfig
    from prepare_data import fbank, read_audio

    config = S2TDataConfig(data / "config.yaml")
    assert config.input_feat_per_channel == 80 and config.vocab_filename == f"spm_unigram{VOCAB_SIZE}.txt"
    assert len((data / config.vocab_filename).read_text().splitlines()) == VOCAB_SIZE - 4  # + fairseq's 4 specials
    assert config.get_feature_transforms("test-clean", False)["feature_transforms"] == ["utterance_cmvn"]
    assert config.get_feature_transforms("train-clean-100", True)["feature_transforms"] == ["utterance_cmvn",
                                                                                             "specaugment"]
    for split, split_texts in texts.items():
        rows = _manifest(data / f"{split}.tsv")
        assert sorted(r["tgt_text"] for r in rows) == sorted(split_texts)  # lowercased transcripts
    row = _manifest(data / "test-other.tsv")[0]
    speaker, chapter, _ = row["id"].split("-")
    audio = read_audio(raw / "test-other" / speaker / chapter / f"{row['id']}.flac")
    stored = get_features_or_waveform(os.path.join(config.audio_root, row["audio"]))
    assert stored.shape == (int(row["n_frames"]), 80) and stored.shape[0] == 1 + (len(audio) - 400) // 160
    np.testing.assert_array_equal(stored, fbank(audio))


def _check_checkpoint_average(save_dir: Path) -> None:
    import torch

    epochs = sorted(save_dir.glob("checkpoint[0-9]*.pt"), key=lambda p: int(p.stem[len("checkpoint"):]))[-2:]
    states = [torch.load(p, weights_only=False)["model"] for p in epochs]
    averaged = torch.load(save_dir / "checkpoint_avg.pt", weights_only=False)["model"]
    key = "decoder.embed_tokens.weight"
    torch.testing.assert_close(averaged[key], (states[0][key] + states[1][key]) / 2)


def _check_report(report: dict, n_test: int) -> None:
    assert report["settings"]["quality"] == "wer"
    for name in ("test-clean", "test-other"):
        info = report["sets"][name]
        assert info["num_sentences"] == n_test and info["max_nbest"] == 3
        assert 0 <= info["quality"]["wer"] < 1000
        tokens = report["token_errors"][name]
        assert tokens["unit"] == "word" and tokens["tokens"] > 0 and tokens["sentences"] > 0
    measures = report["model"]["measures"]
    for m in measures:
        roc = report["ood_detection"]["test-other"]["1"]["uniform"][m]["roc_auc"]
        assert roc is None or 0 <= roc <= 100
    assert set(report["prr"]) == {"test-clean", "test-other"}


@pytest.mark.slow
def test_librispeech_recipe_on_spoken_corpus(tmp_path):
    espeak = _ensure_espeak_ng()
    raw, data, exp = tmp_path / "LibriSpeech", tmp_path / "data", tmp_path / "exp"
    texts = make_spoken_corpus(raw, espeak)
    env = _recipe_env(data, exp)
    _run("prepare.sh", env, tmp_path / "prepare.log", "--raw-dir", str(raw))
    _check_data(data, raw, texts)
    _run("train_teachers.sh", env, tmp_path / "teachers.log")
    _check_checkpoint_average(exp / "teacher1")
    log = _run("distill.sh", env, tmp_path / "distill.log")
    assert "student initialised from" in log and "ensemble_mkl" in log
    _run("generate.sh", env, tmp_path / "generate.log")
    n_test = len(texts["test-clean"])
    for model in ("student", "ensemble"):
        for split in ("test-clean", "test-other"):
            gen = exp / "generate" / model / split
            lines = (gen / f"generate-{split}.txt").read_text().splitlines()
            assert lines[-1].startswith(f"Generate {split} with beam=3: WER")
            uncertainty = (gen / f"uncertainty-{split}.txt").read_text().splitlines()
            kind = "prior_network" if model == "student" else "ensemble"
            assert uncertainty[0].startswith(f"#SU-columns\tkind={kind}")
            assert sum(line.startswith("T-") for line in lines) == len(texts[split])
    _run("evaluate.sh", env, tmp_path / "evaluate.log")
    for model in ("student", "ensemble"):
        _check_report(json.loads((exp / "reports" / model / "report.json").read_text()), n_test)
        assert "## Token error detection on test-clean" in (exp / "reports" / model / "report.md").read_text()
    # re-running skips what is done (resumable recipe)
    assert "exists" in _run("train_teachers.sh", env, tmp_path / "teachers2.log")
