"""Shared fixtures: tiny synthetic parallel data, binarised with the real fairseq-preprocess, and helpers
to run the real fairseq command lines (``python -m fairseq_cli.X``) in this interpreter's environment."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO_ROOT / "proxy_end2")
SYNTHETIC_EXAMPLE = REPO_ROOT / "examples" / "synthetic"
SRC, TGT = "src", "tgt"

# the synthetic example's modules (data generator, main job) are imported by name, as its script does
sys.path.insert(0, str(SYNTHETIC_EXAMPLE))
if importlib.util.find_spec("fairseq") is not None:
    # in-process tests build fairseq tasks with --user-dir proxy_end2; fairseq skips a --user-dir whose package
    # is already imported (the math tests import it without fairseq), so register the plugin explicitly
    import proxy_end2.plugin  # noqa: F401


def run_fairseq(cli: str, args: Sequence[str], log_path: Path, env_extra: dict | None = None) -> str:
    """Run ``python -m fairseq_cli.<cli> ARGS``; return its combined output, fail with the log tail on error."""
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(env_extra or {})
    cmd: List[str] = [sys.executable, "-m", f"fairseq_cli.{cli}", *map(str, args)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if _aborted_at_exit(proc):
        # seen once on CI: a plain fairseq-train (no plugin) finished, then aborted in the C++ runtime's
        # teardown ("terminate called without an active exception"); one re-run, never more
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log_path.write_text(" ".join(cmd) + "\n" + proc.stdout)
    if proc.returncode != 0:
        raise AssertionError(f"fairseq-{cli} failed (exit {proc.returncode}); log {log_path}:\n{proc.stdout[-4000:]}")
    return proc.stdout


def _aborted_at_exit(proc: subprocess.CompletedProcess) -> bool:
    """Whether the process was aborted by std::terminate at interpreter exit (SIGABRT, nothing else wrong)."""
    aborted = proc.returncode in (-6, 134)
    return aborted and proc.stdout.rstrip().endswith("terminate called without an active exception")


def make_binarised_data(root: Path, vocab_size: int = 40, seed: int = 1, sizes=None) -> Path:
    """Synthetic En->De-like data (see examples/synthetic/synthetic_data.py) binarised by fairseq-preprocess."""
    from synthetic_data import SyntheticLanguagePair, write_parallel_splits

    sizes = sizes or {"train": 2000, "valid": 100, "test": 60, "ood_rare": 60, "ood_perm": 60}
    raw = root / "raw"
    pair = SyntheticLanguagePair(vocab_size=vocab_size, ambiguity=0.2, seed=seed)
    prefixes = write_parallel_splits(str(raw), pair, sizes, src=SRC, tgt=TGT, seed=seed,
                                     domains={"ood_rare": "rare_words", "ood_perm": "permuted"})
    destdir = root / "bin"
    test_splits = [prefixes[s] for s in ("test", "ood_rare", "ood_perm") if s in prefixes]  # -> test, test1, test2
    run_fairseq(
        "preprocess",
        ["--source-lang", SRC, "--target-lang", TGT, "--destdir", destdir, "--workers", "1",
         "--trainpref", prefixes["train"], "--validpref", prefixes["valid"], "--testpref", ",".join(test_splits)],
        root / "preprocess.log",
    )
    return destdir


def teacher_train_args(data: Path, save_dir: Path, seed: int, max_epoch: int = 15, extra=()) -> List[str]:
    """fairseq-train flags for a tiny Transformer teacher (about 20 s for 15 epochs on 2 CPU cores)."""
    return [
        data, "--task", "translation", "-s", SRC, "-t", TGT, "--arch", "transformer_tiny",
        "--share-decoder-input-output-embed", "--optimizer", "adam", "--lr", "0.005",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--max-tokens", "512",
        "--max-epoch", str(max_epoch), "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--dropout", "0.1", "--save-dir", save_dir, "--seed", str(seed),
        "--no-epoch-checkpoints", "--required-batch-size-multiple", "1", "--num-workers", "0",
        "--log-format", "json", "--log-interval", "1000", "--cpu", *extra,
    ]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Binarised synthetic data: 40 source words, 2000/100/60 train/valid/test sentences, and two
    out-of-domain test sets of 60 sentences: ``test1`` (rare words) and ``test2`` (permuted source)."""
    return make_binarised_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def quick_teachers(tiny_data, tmp_path_factory) -> List[Path]:
    """Two barely trained teacher checkpoints (one update each, different seeds): real files, fast."""
    root = tmp_path_factory.mktemp("quick_teachers")
    paths = []
    for seed in (1, 2):
        save_dir = root / f"teacher{seed}"
        run_fairseq("train", teacher_train_args(tiny_data, save_dir, seed, extra=["--max-update", "1"]),
                    root / f"teacher{seed}.log")
        paths.append(save_dir / "checkpoint_last.pt")
    return paths


@pytest.fixture(scope="session")
def trained_teachers(tiny_data, tmp_path_factory) -> List[Path]:
    """Two teachers trained for 15 epochs (seeds 11, 12; about 20 s each on 2 CPU cores): they translate."""
    root = tmp_path_factory.mktemp("trained_teachers")
    paths = []
    for seed in (11, 12):
        run_fairseq("train", teacher_train_args(tiny_data, root / f"t{seed}", seed), root / f"t{seed}.log")
        paths.append(root / f"t{seed}" / "checkpoint_best.pt")
    return paths


# -- speech-to-text (tests/speech_data.py) ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_s2t_data(tmp_path_factory) -> Path:
    """fairseq speech-to-text data of 12 "words", each its own pattern of 80-dim frames (tests/speech_data.py):
    splits train (240 utterances), dev, test and test_ood (24 each)."""
    from speech_data import make_s2t_data

    return make_s2t_data(tmp_path_factory.mktemp("tiny_s2t_data"))


@pytest.fixture(scope="session")
def s2t_teachers(tiny_s2t_data, tmp_path_factory) -> List[Path]:
    """Two tiny s2t_transformer teachers trained for one epoch (2 updates; seeds 1, 2): real files, fast."""
    from speech_data import s2t_teacher_train_args

    root = tmp_path_factory.mktemp("s2t_teachers")
    paths = []
    for seed in (1, 2):
        run_fairseq("train", s2t_teacher_train_args(tiny_s2t_data, root / f"t{seed}", seed, max_epoch=1),
                    root / f"t{seed}.log")
        paths.append(root / f"t{seed}" / "checkpoint_last.pt")
    return paths
