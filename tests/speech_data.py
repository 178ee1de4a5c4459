"""Tiny fairseq speech-to-text data for the speech model and task tests: 80-dim "filterbank" frames made from
token-specific patterns (each target word sounds like its own 6 frames plus noise), saved as .npy files, with
fairseq S2T TSV manifests, a vocabulary and ``config.yaml`` (no audio, no sentencepiece: the targets are words).

Splits: ``train`` (240 utterances), ``dev`` and ``test`` (24 each), ``test_ood`` (24, other sound patterns).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Sequence

import numpy as np
import yaml

WORDS = [f"w{i}" for i in range(12)]
FRAMES_PER_WORD = 6
FEATURES = 80
SPLITS = {"train": 240, "dev": 24, "test": 24, "test_ood": 24}

#: a tiny s2t_transformer: 1+1 layers, 32-dim (seconds per epoch on one CPU core)
TINY_S2T_MODEL = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
                  "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                  "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--conv-channels", "32"]


def _utterance(rng: np.random.Generator, patterns: np.ndarray) -> tuple[np.ndarray, List[str]]:
    words = list(rng.choice(len(WORDS), size=int(rng.integers(2, 6))))
    frames = np.concatenate([np.repeat(patterns[w][None], FRAMES_PER_WORD, 0) for w in words])
    frames = frames + 0.3 * rng.standard_normal(frames.shape)
    return frames.astype(np.float32), [WORDS[w] for w in words]


def make_s2t_data(root: Path, seed: int = 0, splits=None) -> Path:
    """Write the data under ``root`` and return it (the ``DATA`` argument of fairseq's S2T commands)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = 3.0 * rng.standard_normal((len(WORDS), FEATURES))
    ood_patterns = 3.0 * rng.standard_normal((len(WORDS), FEATURES))
    (root / "features").mkdir(exist_ok=True)
    for split, count in (splits or SPLITS).items():
        rows = []
        for i in range(count):
            frames, words = _utterance(rng, ood_patterns if split.endswith("ood") else patterns)
            path = root / "features" / f"{split}-{i}.npy"
            np.save(path, frames)
            rows.append({"id": f"{split}-{i}", "audio": str(path), "n_frames": len(frames),
                         "tgt_text": " ".join(words), "speaker": "spk0"})
        write_manifest(root / f"{split}.tsv", rows)
    (root / "dict.txt").write_text("".join(f"{w} 1\n" for w in WORDS))
    config = {"vocab_filename": "dict.txt", "input_feat_per_channel": FEATURES, "input_channels": 1,
              "feature_transforms": {"*": ["utterance_cmvn"]}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def write_manifest(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "audio", "n_frames", "tgt_text", "speaker"], delimiter="\t",
                                quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def s2t_teacher_train_args(data: Path, save_dir: Path, seed: int, max_epoch: int = 10, extra=()) -> List[str]:
    """fairseq-train flags for a tiny ``s2t_transformer`` teacher on :func:`make_s2t_data`'s data."""
    return [
        data, "--task", "speech_to_text", "--config-yaml", "config.yaml", "--train-subset", "train",
        "--valid-subset", "dev", "--arch", "s2t_transformer_xs", *TINY_S2T_MODEL,
        "--share-decoder-input-output-embed", "--optimizer", "adam", "--lr", "0.005",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20", "--max-tokens", "4000",
        "--max-epoch", str(max_epoch), "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--dropout", "0.1", "--save-dir", save_dir, "--seed", str(seed), "--no-epoch-checkpoints",
        "--required-batch-size-multiple", "1", "--num-workers", "0", "--log-format", "json",
        "--log-interval", "1000", "--cpu", *extra,
    ]
