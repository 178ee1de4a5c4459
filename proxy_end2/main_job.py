"""The main job: from nothing to distilled Prior Networks and an uncertainty report, on a laptop CPU.

    python -m proxy_end2.main_job --out runs/main_job        # or: bash scripts/main_job.sh

Steps (each is skipped when its output is complete, so a re-run resumes where it stopped; an interrupted
fairseq-train resumes from its own checkpoint_last.pt):

1. ``data``: a built-in synthetic translation task (:mod:`proxy_end2.data.synthetic`; about 2,000 target
   types), with an in-domain test set and two out-of-domain test sets (rare words, permuted source),
   binarised by fairseq-preprocess;
2. ``teacher<i>``: an ensemble of Transformers trained with different seeds (fairseq-train);
3. ``student_<criterion>``: ``prior_transformer`` students distilled from the ensemble with
   ``fairseq-train --user-dir proxy_end2 --task translation_distillation``, one per criterion:
   the Proxy-Dirichlet loss and, as baselines, EnD^2 (Dirichlet NLL) and classic KL distillation;
4. ``generate_<model>_<set>``: fairseq-generate of every test set with the ensemble and every student,
   printing token- and sequence-level uncertainty (``--nbest``);
5. ``evaluate_<model>``: proxy-end2-evaluate (BLEU, OOD ROC-AUC per measure, PRR, plots) per model;
6. a summary table of all models, printed and written to ``<out>/summary.md`` (and ``summary.json``).

Every command is logged before it runs; its full output is kept in ``<out>/logs/``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .data.synthetic import SyntheticLanguagePair, write_parallel_splits

logger = logging.getLogger("proxy_end2.main_job")

USER_DIR = str(Path(__file__).resolve().parent)
SRC, TGT = "src", "tgt"
CRITERIA = ("proxy_dirichlet_distillation", "dirichlet_nll_distillation", "ensemble_kl_distillation")
CRITERION_FLAGS = {
    "proxy_dirichlet_distillation": ["--target-concentration", "mkl", "--target-offset", "1"],
    # EnD^2 needs alpha_k < 1 for the classes the teachers all but rule out: no offset
    "dirichlet_nll_distillation": ["--model-offset", "0"],
    "ensemble_kl_distillation": [],
}
SHORT_NAMES = {
    "ensemble": "ensemble",
    "proxy_dirichlet_distillation": "Proxy-EnD^2",
    "dirichlet_nll_distillation": "EnD^2 (NLL)",
    "ensemble_kl_distillation": "EnD (KL)",
}
# fairseq-preprocess names the comma-separated --testpref splits test, test1, test2
TEST_SETS = {"id": "test", "rare_words": "test1", "permuted": "test2"}


@dataclass
class MainJobConfig:
    out: str = "runs/main_job"
    num_teachers: int = 3
    vocab_size: int = 1700
    ambiguity: float = 0.2
    train_size: int = 6000
    valid_size: int = 200
    test_size: int = 300
    teacher_arch: str = "transformer_tiny"
    student_arch: str = "prior_transformer_tiny"
    teacher_epochs: int = 12
    student_epochs: int = 12
    max_tokens: int = 1024
    warmup_updates: int = 100
    lr: float = 0.003
    beam: int = 5
    nbest: int = 5
    criteria: List[str] = field(default_factory=lambda: list(CRITERIA))
    seed: int = 1


class StepRunner:
    """Runs the job's commands, skipping steps whose ``done`` marker exists."""

    def __init__(self, out: Path):
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timings: Dict[str, float] = {}

    def done(self, name: str) -> bool:
        return (self.out / ".done" / name).exists()

    def mark_done(self, name: str, seconds: Optional[float] = None) -> None:
        marker = self.out / ".done" / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"seconds": seconds}))

    def run(self, name: str, cmd: Sequence) -> str:
        """Run ``cmd``; show fairseq's progress lines live, keep everything in ``logs/<name>.log``."""
        cmd = [str(c) for c in cmd]
        logger.info(f"[{name}] $ {shlex.join(cmd)}")
        log_path = self.logs / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        lines: List[str] = []
        start = time.time()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if _is_progress_line(line):
                    sys.stderr.write(f"  [{name}] {_shorten(line)}\n")
            code = proc.wait()
        self.timings[name] = time.time() - start
        if code != 0:
            tail = "".join(lines[-30:])
            raise RuntimeError(f"step {name} failed with exit code {code}; full log: {log_path}\n{tail}")
        return "".join(lines)


def _is_progress_line(line: str) -> bool:
    return ("| valid on " in line or "| train |" in line or "Generate " in line or "teacher ensemble" in line
            or "Traceback" in line or "Error" in line)


def _shorten(line: str) -> str:
    line = line.rstrip()
    for marker in ("| INFO | fairseq_cli.train | ", "| INFO | train | ", "| INFO | valid | "):
        line = line.split(marker)[-1]
    return line[:160]


def fairseq_cli(name: str) -> List[str]:
    return [sys.executable, "-m", f"fairseq_cli.{name}"]


def prepare_data(cfg: MainJobConfig, runner: StepRunner) -> Path:
    data_bin = runner.out / "data-bin"
    if runner.done("data"):
        return data_bin
    pair = SyntheticLanguagePair(vocab_size=cfg.vocab_size, ambiguity=cfg.ambiguity, seed=cfg.seed)
    sizes = {"train": cfg.train_size, "valid": cfg.valid_size, "test": cfg.test_size,
             "test_rare_words": cfg.test_size, "test_permuted": cfg.test_size}
    domains = {"test_rare_words": "rare_words", "test_permuted": "permuted"}
    prefixes = write_parallel_splits(str(runner.out / "data-raw"), pair, sizes, src=SRC, tgt=TGT,
                                     seed=cfg.seed, domains=domains)
    test_prefixes = ",".join(prefixes[s] for s in ("test", "test_rare_words", "test_permuted"))
    runner.run("preprocess", fairseq_cli("preprocess") + [
        "--source-lang", SRC, "--target-lang", TGT, "--trainpref", prefixes["train"],
        "--validpref", prefixes["valid"], "--testpref", test_prefixes, "--destdir", data_bin, "--workers", "2"])
    runner.mark_done("data")
    logger.info(f"data: {pair.vocab_size} source words, {pair.target_vocab_size} target words; {sizes}")
    return data_bin


def train_args(cfg: MainJobConfig, data_bin: Path, save_dir: Path, seed: int, epochs: int) -> List:
    return [
        data_bin, "-s", SRC, "-t", TGT, "--share-decoder-input-output-embed",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", str(cfg.lr),
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(cfg.warmup_updates), "--clip-norm", "1.0",
        "--max-tokens", str(cfg.max_tokens), "--max-epoch", str(epochs), "--dropout", "0.1",
        "--save-dir", save_dir, "--seed", str(seed), "--no-epoch-checkpoints", "--num-workers", "0", "--cpu",
        "--log-format", "simple", "--log-interval", "100",
    ]


def train_teachers(cfg: MainJobConfig, data_bin: Path, runner: StepRunner) -> List[Path]:
    paths = []
    for i in range(cfg.num_teachers):
        name = f"teacher{i + 1}"
        save_dir = runner.out / "teachers" / name
        if not runner.done(name):
            runner.run(name, fairseq_cli("train") + train_args(cfg, data_bin, save_dir, 100 + i, cfg.teacher_epochs)
                       + ["--task", "translation", "--arch", cfg.teacher_arch,
                          "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                          "--required-batch-size-multiple", "1"])
            runner.mark_done(name, runner.timings[name])
        paths.append(save_dir / "checkpoint_best.pt")
    return paths


def train_student(cfg: MainJobConfig, data_bin: Path, teachers: Sequence[Path], criterion: str,
                  runner: StepRunner) -> Path:
    name = f"student_{criterion}"
    save_dir = runner.out / "students" / criterion
    if not runner.done(name):
        runner.run(name, fairseq_cli("train") + train_args(cfg, data_bin, save_dir, 7, cfg.student_epochs) + [
            "--user-dir", USER_DIR, "--task", "translation_distillation",
            "--teacher-paths", ":".join(map(str, teachers)),
            "--arch", cfg.student_arch, "--criterion", criterion, *CRITERION_FLAGS[criterion]])
        runner.mark_done(name, runner.timings[name])
    return save_dir / "checkpoint_best.pt"


def generate(cfg: MainJobConfig, data_bin: Path, paths: Sequence[Path], model: str,
             runner: StepRunner) -> Dict[str, Path]:
    """fairseq-generate every test set; returns set name -> generate output file."""
    files = {}
    for set_name, subset in TEST_SETS.items():
        step = f"generate_{model}_{set_name}"
        results = runner.out / "generate" / model / set_name
        if not runner.done(step):
            runner.run(step, fairseq_cli("generate") + [
                data_bin, "--user-dir", USER_DIR, "--task", "translation_distillation", "-s", SRC, "-t", TGT,
                "--path", ":".join(map(str, paths)), "--gen-subset", subset, "--beam", str(cfg.beam),
                "--nbest", str(cfg.nbest), "--batch-size", "100", "--num-workers", "0", "--cpu",
                # translations are about as long as their source: stop runaway hypotheses early
                "--max-len-a", "1.5", "--max-len-b", "10",
                "--results-path", results])
            runner.mark_done(step, runner.timings[step])
        files[set_name] = results / f"generate-{subset}.txt"
    return files


def evaluate_model(model: str, files: Dict[str, Path], runner: StepRunner) -> dict:
    from .evaluation import evaluate

    out_dir = runner.out / "reports" / model
    step = f"evaluate_{model}"
    if runner.done(step) and (out_dir / "report.json").exists():
        return json.loads((out_dir / "report.json").read_text())
    logger.info(f"[{step}] proxy-end2-evaluate --id id={files['id']} "
                + " ".join(f"--ood {k}={v}" for k, v in files.items() if k != "id") + f" --out {out_dir}")
    start = time.time()
    report = evaluate(files["id"], {k: v for k, v in files.items() if k != "id"}, id_name="id",
                      out_dir=out_dir)
    runner.mark_done(step, time.time() - start)
    return json.loads((out_dir / "report.json").read_text())


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def summarise(reports: Dict[str, dict]) -> str:
    """One screen: quality, OOD detection by a knowledge and a total measure, error detection, per model."""
    header = ("| model | BLEU ID | BLEU rare | ROC-AUC rare: MI | ROC-AUC perm: MI | ROC-AUC rare: EoE "
              "| ROC-AUC perm: EoE | PRR: EoE | PRR: MI |")
    lines = [header, "|" + "---|" * 9]
    for model, report in reports.items():
        sets, ood, prr = report["sets"], report["ood_detection"], report["prr"]
        one = lambda table, measure: table["1"]["uniform"].get(measure)  # noqa: E731

        def auc(ood_set, measure):
            value = one(ood[ood_set], measure)
            return None if value is None else value["roc_auc"]

        lines.append("| " + " | ".join([
            SHORT_NAMES.get(model, model),
            _fmt(sets["id"]["quality"]["bleu"]), _fmt(sets["rare_words"]["quality"]["bleu"]),
            _fmt(auc("rare_words", "mutual_information")), _fmt(auc("permuted", "mutual_information")),
            _fmt(auc("rare_words", "entropy_of_expected")), _fmt(auc("permuted", "entropy_of_expected")),
            _fmt(one(prr["id"], "entropy_of_expected")), _fmt(one(prr["id"], "mutual_information")),
        ]) + " |")
    notes = [
        "",
        "Top-1 hypotheses (n = 1). BLEU: sacrebleu on the in-domain (ID) and rare-words test sets. ROC-AUC (%): "
        "detecting the out-of-domain set (rare words or permuted source) against the ID set, with the "
        "mutual information (MI, knowledge uncertainty; ensemble: members' disagreement, Prior Networks: the "
        "closed-form Dirichlet MI) or the entropy of the expected distribution (EoE, total uncertainty), each "
        "averaged over the hypothesis' tokens. PRR (%): sequence error detection on the ID set "
        "(100 = oracle, 0 = random). Full reports: reports/<model>/report.md.",
    ]
    return "\n".join(lines + notes)


def run(cfg: MainJobConfig) -> Dict[str, dict]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    runner = StepRunner(out)
    start = time.time()
    data_bin = prepare_data(cfg, runner)
    teachers = train_teachers(cfg, data_bin, runner)
    models: Dict[str, List[Path]] = {"ensemble": teachers}
    for criterion in cfg.criteria:
        models[criterion] = [train_student(cfg, data_bin, teachers, criterion, runner)]
    reports = {}
    for model, paths in models.items():
        files = generate(cfg, data_bin, paths, model, runner)
        reports[model] = evaluate_model(model, files, runner)
    table = summarise(reports)
    elapsed = time.time() - start
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    text = (f"# proxy_end2 main job: summary\n\n{table}\n\nOutput folder: {out}; this invocation ran for "
            f"{elapsed:.0f} s on {machine} (steps already done were skipped).\n")
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(
        {"config": asdict(cfg), "seconds": elapsed, "machine": machine, "step_seconds": runner.timings,
         "reports": {m: f"reports/{m}/report.json" for m in reports}}, indent=1))
    print("\n" + text)
    return reports


def main(argv: Sequence[str] | None = None) -> None:
    defaults = MainJobConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=defaults.out, help="output folder (re-running resumes it)")
    for key in ("num_teachers", "vocab_size", "train_size", "valid_size", "test_size", "teacher_epochs",
                "student_epochs", "max_tokens", "warmup_updates", "beam", "nbest", "seed"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=getattr(defaults, key),
                            help=f"(default {getattr(defaults, key)})")
    parser.add_argument("--ambiguity", type=float, default=defaults.ambiguity,
                        help="fraction of source words with two translations (data uncertainty)")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--teacher-arch", default=defaults.teacher_arch)
    parser.add_argument("--student-arch", default=defaults.student_arch)
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s", stream=sys.stderr)
    run(MainJobConfig(**vars(args)))


if __name__ == "__main__":
    main()
