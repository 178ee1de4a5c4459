"""The main job: from nothing to a distilled Prior Network, on built-in synthetic data, on a laptop CPU.

    python -m proxy_end2.main_job --out runs/main_job

Steps (each one is skipped when its output is complete, so a re-run resumes where it stopped; an
interrupted fairseq-train resumes from its own checkpoint_last.pt):

1. ``data``: a synthetic translation task (see :mod:`proxy_end2.data.synthetic`), binarised with
   fairseq-preprocess;
2. ``teacher<i>``: an ensemble of Transformers trained with different seeds (fairseq-train);
3. ``student_<criterion>``: one ``prior_transformer`` student per criterion, distilled from the ensemble with
   ``fairseq-train --user-dir proxy_end2 --task translation_distillation``;
4. ``generate_<model>``: fairseq-generate of the test set with the ensemble and with every student.

Every command is printed before it runs, its output is shown live and kept in ``<out>/logs/``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

from .data.synthetic import SyntheticLanguagePair, write_parallel_splits

logger = logging.getLogger("proxy_end2.main_job")

USER_DIR = str(Path(__file__).resolve().parent)
SRC, TGT = "src", "tgt"
CRITERIA = ("proxy_dirichlet_distillation", "dirichlet_nll_distillation", "ensemble_kl_distillation")


@dataclass
class MainJobConfig:
    out: str = "runs/main_job"
    num_teachers: int = 3
    vocab_size: int = 200
    ambiguity: float = 0.2
    train_size: int = 6000
    valid_size: int = 200
    test_size: int = 300
    teacher_epochs: int = 15
    student_epochs: int = 15
    max_tokens: int = 1024
    criteria: List[str] = field(default_factory=lambda: list(CRITERIA))
    seed: int = 1


class StepRunner:
    """Runs the job's shell steps, skipping those whose ``done`` marker exists."""

    def __init__(self, out: Path):
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def done(self, name: str) -> bool:
        return (self.out / ".done" / name).exists()

    def mark_done(self, name: str, info: dict | None = None) -> None:
        marker = self.out / ".done" / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(info or {}, indent=1))

    def run(self, name: str, cmd: Sequence[str]) -> str:
        """Run ``cmd``, streaming its output to the console and ``logs/<name>.log``; return the output."""
        cmd = [str(c) for c in cmd]
        logger.info(f"[{name}] $ {shlex.join(cmd)}")
        log_path = self.logs / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        lines: List[str] = []
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if _is_progress_line(line):
                    sys.stderr.write(f"  [{name}] {line.rstrip()[:200]}\n")
            code = proc.wait()
        if code != 0:
            tail = "".join(lines[-30:])
            raise RuntimeError(f"step {name} failed with exit code {code}; full log: {log_path}\n{tail}")
        return "".join(lines)


def _is_progress_line(line: str) -> bool:
    return any(tag in line for tag in ("| train |", "| valid |", "BLEU", "Error", "error", "loaded teacher",
                                       "teacher ensemble"))


def fairseq_cli(name: str) -> List[str]:
    return [sys.executable, "-m", f"fairseq_cli.{name}"]


def prepare_data(cfg: MainJobConfig, runner: StepRunner) -> Path:
    data_bin = runner.out / "data-bin"
    if runner.done("data"):
        return data_bin
    pair = SyntheticLanguagePair(vocab_size=cfg.vocab_size, ambiguity=cfg.ambiguity, seed=cfg.seed)
    sizes = {"train": cfg.train_size, "valid": cfg.valid_size, "test": cfg.test_size}
    prefixes = write_parallel_splits(str(runner.out / "data-raw"), pair, sizes, src=SRC, tgt=TGT, seed=cfg.seed)
    runner.run("preprocess", fairseq_cli("preprocess") + [
        "--source-lang", SRC, "--target-lang", TGT, "--trainpref", prefixes["train"],
        "--validpref", prefixes["valid"], "--testpref", prefixes["test"], "--destdir", data_bin, "--workers", "1"])
    runner.mark_done("data", {"sizes": sizes, "vocab_size": cfg.vocab_size})
    return data_bin


def common_train_args(cfg: MainJobConfig, data_bin: Path, save_dir: Path, seed: int, epochs: int) -> List[str]:
    return [
        data_bin, "-s", SRC, "-t", TGT, "--share-decoder-input-output-embed",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "200", "--clip-norm", "1.0",
        "--max-tokens", str(cfg.max_tokens), "--max-epoch", str(epochs), "--dropout", "0.1",
        "--save-dir", save_dir, "--seed", str(seed), "--no-epoch-checkpoints",
        "--required-batch-size-multiple", "1", "--num-workers", "0", "--cpu",
        "--log-format", "simple", "--log-interval", "50",
    ]


def train_teachers(cfg: MainJobConfig, data_bin: Path, runner: StepRunner) -> List[Path]:
    paths = []
    for i in range(cfg.num_teachers):
        save_dir = runner.out / "teachers" / f"teacher{i + 1}"
        name = f"teacher{i + 1}"
        if not runner.done(name):
            runner.run(name, fairseq_cli("train") + common_train_args(
                cfg, data_bin, save_dir, seed=100 + i, epochs=cfg.teacher_epochs) + [
                "--task", "translation", "--arch", "transformer_tiny",
                "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"])
            runner.mark_done(name)
        paths.append(save_dir / "checkpoint_best.pt")
    return paths


def train_student(cfg: MainJobConfig, data_bin: Path, teachers: Sequence[Path], criterion: str,
                  runner: StepRunner) -> Path:
    save_dir = runner.out / "students" / criterion
    name = f"student_{criterion}"
    if not runner.done(name):
        runner.run(name, fairseq_cli("train") + common_train_args(
            cfg, data_bin, save_dir, seed=7, epochs=cfg.student_epochs) + [
            "--user-dir", USER_DIR, "--task", "translation_distillation",
            "--teacher-paths", ":".join(map(str, teachers)),
            "--arch", "prior_transformer_tiny", "--criterion", criterion])
        runner.mark_done(name)
    return save_dir / "checkpoint_best.pt"


def generate(cfg: MainJobConfig, data_bin: Path, paths: Sequence[Path], name: str, runner: StepRunner) -> dict:
    step = f"generate_{name}"
    result_file = runner.out / "generate" / f"{name}.json"
    if runner.done(step) and result_file.exists():
        return json.loads(result_file.read_text())
    results_dir = runner.out / "generate" / name
    output = runner.run(step, fairseq_cli("generate") + [
        data_bin, "--user-dir", USER_DIR, "--task", "translation", "-s", SRC, "-t", TGT,
        "--path", ":".join(map(str, paths)), "--gen-subset", "test", "--beam", "5", "--batch-size", "64",
        "--required-batch-size-multiple", "1", "--num-workers", "0", "--cpu", "--results-path", results_dir])
    text = (results_dir / "generate-test.txt").read_text()
    match = re.search(r"BLEU4? = ([0-9.]+)", text)
    result = {"model": name, "bleu": float(match.group(1)) if match else None, "log": output[-200:]}
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=1))
    runner.mark_done(step)
    return result


def run(cfg: MainJobConfig) -> Dict[str, dict]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    runner = StepRunner(out)
    start = time.time()
    data_bin = prepare_data(cfg, runner)
    teachers = train_teachers(cfg, data_bin, runner)
    results = {"ensemble": generate(cfg, data_bin, teachers, "ensemble", runner)}
    for criterion in cfg.criteria:
        student = train_student(cfg, data_bin, teachers, criterion, runner)
        results[criterion] = generate(cfg, data_bin, [student], criterion, runner)
    logger.info(f"main job finished in {time.time() - start:.0f} s; outputs in {out}")
    print("\n| model | test BLEU |\n|---|---|")
    for name, res in results.items():
        print(f"| {name} | {res['bleu']} |")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    defaults = MainJobConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=defaults.out, help="output folder (re-running resumes it)")
    for key in ("num_teachers", "vocab_size", "train_size", "valid_size", "test_size", "teacher_epochs",
                "student_epochs", "max_tokens", "seed"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=getattr(defaults, key))
    parser.add_argument("--ambiguity", type=float, default=defaults.ambiguity)
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s")
    run(MainJobConfig(**vars(args)))


if __name__ == "__main__":
    main()
