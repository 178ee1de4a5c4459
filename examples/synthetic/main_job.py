"""The main job: from nothing to distilled Prior Networks and an uncertainty report, on a laptop CPU.

    bash examples/synthetic/run.sh [--out runs/main_job] [...]    # sets up .venv first
    python examples/synthetic/main_job.py --help                   # in an environment that has proxy_end2

Steps (each is skipped when its output is complete, so a re-run resumes where it stopped; an interrupted
fairseq-train resumes from its own checkpoint_last.pt). Independent steps run side by side (``--jobs``, each
command with ``--threads`` torch threads), the long ones first:

1. ``data``: a built-in synthetic translation task (``synthetic_data.py``; K = 2,016 target
   classes), with an in-domain test set and two out-of-domain test sets (rare words, permuted source),
   binarised by fairseq-preprocess;
2. ``teacher<i>``: an ensemble of Transformers trained with different seeds (fairseq-train);
3. optionally (``--student-targets ensemble``) ``translate_train_<i>`` + ``distill_data``: the ensemble's
   beam-search translations of the training sources become the students' targets (the authors' MT recipe);
4. ``student_<criterion>``: ``prior_transformer`` students distilled from the ensemble with
   ``fairseq-train --user-dir proxy_end2 --task translation_distillation``, one per criterion:
   the Proxy-Dirichlet loss and, as baselines, EnD^2 (Dirichlet NLL) and classic KL distillation; by default
   they start from teacher 1's weights (``--student-init``) and are fine-tuned at a lower learning rate;
5. ``generate_<model>_<set>``: fairseq-generate of every test set with the ensemble, teacher 1 alone and
   every student, printing token- and sequence-level uncertainty (``--nbest``);
6. ``evaluate_<model>``: proxy-end2-evaluate (BLEU, OOD ROC-AUC per measure, PRR, plots) per model;
7. a summary table of all models, printed and written to ``<out>/summary.md`` (and ``summary.json``).

Every command is logged before it runs; its full output is kept in ``<out>/logs/``. fairseq runs every
command on the GPU when there is one (``--cpu`` forces the CPU).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import proxy_end2
from config import CRITERIA, MainJobConfig, parse_config
from output_folder import OutputFolderError, check_output_folder
from step_runner import Step, StepRunner
from synthetic_data import SyntheticLanguagePair, write_parallel_splits

logger = logging.getLogger("proxy_end2.main_job")

USER_DIR = os.path.dirname(os.path.abspath(proxy_end2.__file__))  # fairseq --user-dir
SRC, TGT = "src", "tgt"
CRITERION_FLAGS = {
    "proxy_dirichlet_distillation": ["--target-concentration", "mkl", "--target-offset", "1"],
    # the authors' recipes use alpha = exp(z) + 1 for every criterion (with offset 0 the loss is bounded below
    # whenever the members differ, but its minimum lies at very large precisions and huge negative values)
    "dirichlet_nll_distillation": ["--model-offset", "1"],
    "ensemble_kl_distillation": [],
}
SHORT_NAMES = {
    "ensemble": "ensemble",
    "teacher1": "teacher 1 (single)",
    "proxy_dirichlet_distillation": "Proxy-EnD^2",
    "dirichlet_nll_distillation": "EnD^2 (NLL)",
    "ensemble_kl_distillation": "EnD (KL)",
}
# glibc returns the large [tokens, classes] temporaries of every step to the kernel and page-faults them back
# in at the next step (a fifth of the job's CPU time was system time); keep them in the heap instead
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
# fairseq-preprocess names the comma-separated --testpref splits test, test1, test2
TEST_SETS = {"id": "test", "rare_words": "test1", "permuted": "test2"}


def cpu_flag(cfg: MainJobConfig) -> List[str]:
    """``--cpu`` when asked for; otherwise fairseq uses the GPU if there is one."""
    return ["--cpu"] if cfg.cpu else []


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
    entries = [line.split()[0] for line in (data_bin / f"dict.{TGT}.txt").read_text(encoding="utf-8").splitlines()]
    seen = sum(not word.startswith("madeupword") for word in entries)
    logger.info(f"data: {pair.vocab_size} source words, {pair.target_vocab_size} target words in the lexicon of "
                f"which {seen} occur in training; K = {len(entries) + 4} target classes (with fairseq's 4 special "
                f"symbols and padding to a multiple of 8); {sizes}")
    return data_bin


def distillation_data_steps(cfg: MainJobConfig, data_bin: Path, runner: StepRunner, teachers: Sequence[Path],
                            after: Sequence[str]) -> Tuple[List[Step], Path]:
    """The students' training targets: the ensemble's own beam-search translations of the training sources
    (sequence-level distillation, as in the authors' MT recipes); validation and test sets keep their
    references. Returns the steps (one fairseq-generate per shard, then fairseq-preprocess) and the data."""
    # one shard per job slot, each of several batches (fairseq-generate fails on a shard with no batch)
    shards, out = max(1, min(cfg.jobs, cfg.train_size // 1000)), runner.out
    distill_bin, work = out / "data-bin-distill", out / "distill"
    steps = [Step(f"translate_train_{i}", generate_cmd(
        cfg, data_bin, teachers, "train", work / f"shard{i}", "--no-uncertainty", "--nbest", 1,
        "--max-tokens", 4096, "--batch-size", 250,
        "--distributed-world-size", shards, "--distributed-rank", i), tuple(after))  # shard i of the batches
        for i in range(shards)]

    def binarise() -> None:
        raw = out / "data-raw"
        hypotheses = read_hypotheses([work / f"shard{i}" / "generate-train.txt" for i in range(shards)])
        references = (raw / f"train.{TGT}").read_text(encoding="utf-8").splitlines()
        targets, empty = ensemble_targets(hypotheses, references)
        if empty:
            logger.warning(f"{empty} empty ensemble translations of training sentences: kept their references")
        (work / f"train.{TGT}").write_text("\n".join(targets) + "\n", encoding="utf-8")
        shutil.copyfile(raw / f"train.{SRC}", work / f"train.{SRC}")
        runner.run("preprocess_distill", fairseq_cli("preprocess") + [
            "--source-lang", SRC, "--target-lang", TGT, "--trainpref", work / "train",
            "--validpref", raw / "valid", "--srcdict", data_bin / f"dict.{SRC}.txt",
            "--tgtdict", data_bin / f"dict.{TGT}.txt", "--destdir", distill_bin, "--workers", "2"])

    steps.append(Step("distill_data", binarise, tuple(s.name for s in steps)))
    return steps, distill_bin


def read_hypotheses(files: Sequence[Path]) -> Dict[int, str]:
    """Sentence id -> top hypothesis (its ``H-`` line) of fairseq-generate outputs, e.g. the shards of one split."""
    from proxy_end2.evaluation.parsing import read_generate_output

    hypotheses: Dict[int, str] = {}
    for path in files:
        run = read_generate_output(path, require_uncertainty=False, allow_missing_ids=True, load_token_values=False)
        for sentence in run.sentences:
            if sentence.hypotheses:
                hypotheses.setdefault(sentence.id, sentence.hypotheses[0].tokenized)
    return hypotheses


def ensemble_targets(hypotheses: Dict[int, str], references: Sequence[str]) -> Tuple[List[str], int]:
    """Training targets in corpus order: the ensemble's translation, or the reference where it is empty.

    Raises ValueError if a sentence has no translation (a shard missing or cut short)."""
    missing = [i for i in range(len(references)) if i not in hypotheses]
    if missing:
        raise ValueError(f"{len(missing)} of {len(references)} training sentences have no ensemble translation "
                         f"(first: {missing[:5]}); delete the distill/ folder and its .done markers to redo it")
    targets, empty = [], 0
    for i, reference in enumerate(references):
        hypothesis = hypotheses[i].strip()
        empty += not hypothesis
        targets.append(hypothesis or reference)
    return targets, empty


def train_args(cfg: MainJobConfig, data_bin: Path, save_dir: Path, seed: int, epochs: int, lr: float) -> List:
    return [
        data_bin, "-s", SRC, "-t", TGT, "--share-decoder-input-output-embed",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", str(lr),
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(cfg.warmup_updates), "--clip-norm", "1.0",
        "--max-tokens", str(cfg.max_tokens), "--max-epoch", str(epochs), "--dropout", "0.1",
        "--save-dir", save_dir, "--seed", str(seed), "--no-epoch-checkpoints", "--num-workers", "0", *cpu_flag(cfg),
        # checkpoint_best.pt = the epoch with the lowest validation NLL of the references, for every model (the
        # distillation losses measure closeness to the ensemble; EnD^2's is a large negative number)
        "--best-checkpoint-metric", "nll_loss",
        "--log-format", "simple", "--log-interval", "100",
    ]


def teacher_steps(cfg: MainJobConfig, data_bin: Path, out: Path) -> Tuple[List[Step], List[Path]]:
    """One fairseq-train per teacher (seeds 100, 101, ...); returns the steps and the teachers' checkpoints."""
    steps, paths = [], []
    for i in range(cfg.num_teachers):
        save_dir = out / "teachers" / f"teacher{i + 1}"
        steps.append(Step(f"teacher{i + 1}", fairseq_cli("train") + train_args(
            cfg, data_bin, save_dir, 100 + i, cfg.teacher_epochs, cfg.lr) + [
            "--task", "translation", "--arch", cfg.teacher_arch,
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--required-batch-size-multiple", "1"]))
        paths.append(save_dir / "checkpoint_best.pt")
    return steps, paths


#: the criteria that can train from an offline teacher cache (the others always run the teachers online)
CACHE_CRITERIA = ("proxy_dirichlet_distillation", "ensemble_kl_distillation")


def uses_cache(cfg: MainJobConfig, criterion: str) -> bool:
    return cfg.teacher_cache and criterion in CACHE_CRITERIA


def student_name(cfg: MainJobConfig, criterion: str) -> str:
    """The name of a student (its folder, steps and report): the criterion, ``-cache`` when it trains from the
    teacher cache, and the seed when not the default."""
    return (criterion + ("-cache" if uses_cache(cfg, criterion) else "")
            + (f"-seed{cfg.student_seed}" if cfg.student_seed != 7 else ""))


def teacher_cache_step(cfg: MainJobConfig, data_bin: Path, out: Path, teachers: Sequence[Path],
                       after: Sequence[str]) -> Tuple[Step, Path]:
    """proxy-end2-teacher-cache over the students' train and valid splits (the teachers run once)."""
    cache = out / "teacher_cache" / f"{data_bin.name}-top{cfg.cache_topk}"
    return Step(f"teacher_cache_{data_bin.name}_top{cfg.cache_topk}", [
        sys.executable, "-m", "proxy_end2.teacher_cache", data_bin, "-s", SRC, "-t", TGT,
        "--teacher-paths", ":".join(map(str, teachers)), "--gen-subset", "train,valid", "--topk", cfg.cache_topk,
        "--cache-dir", cache, "--max-tokens", 4096, "--num-workers", "0", "--no-progress-bar", *cpu_flag(cfg)],
        tuple(after)), cache


def student_step(cfg: MainJobConfig, data_bin: Path, out: Path, teachers: Sequence[Path], criterion: str,
                 after: Sequence[str], init: Optional[Path] = None, cache: Optional[Path] = None) -> Tuple[Step, Path]:
    """fairseq-train --user-dir proxy_end2 of a ``prior_transformer`` student with ``criterion``, optionally
    initialised from the checkpoint ``init`` and trained from the teacher cache ``cache`` (the teachers' paths
    are still given: the task checks the cache against them without loading them)."""
    name = student_name(cfg, criterion)
    save_dir = out / "students" / name
    step = Step(f"student_{name}", fairseq_cli("train") + train_args(
        cfg, data_bin, save_dir, cfg.student_seed, cfg.student_epochs, cfg.student_lr) + [
        "--user-dir", USER_DIR, "--task", "translation_distillation",
        "--teacher-paths", ":".join(map(str, teachers)), *(["--student-init", init] if init else []),
        *(["--teacher-cache", cache] if cache else []), "--arch", cfg.student_arch, "--criterion", criterion, *CRITERION_FLAGS[criterion]], tuple(after))
    return step, save_dir / "checkpoint_best.pt"


def student_steps(cfg: MainJobConfig, data_bin: Path, out: Path, teachers: Sequence[Path],
                  after: Sequence[str]) -> Tuple[List[Step], Dict[str, Tuple[str, Path]]]:
    """The teacher cache (when a student uses it) and one student per criterion; returns the steps and, per
    student name, its step's name and checkpoint."""
    init = teachers[0] if cfg.student_init == "teacher1" else None
    steps, students, cache, cache_after = [], {}, None, after
    if any(uses_cache(cfg, criterion) for criterion in cfg.criteria):
        cache_step, cache = teacher_cache_step(cfg, data_bin, out, teachers, after)
        steps.append(cache_step)
        cache_after = [cache_step.name]
    for criterion in cfg.criteria:
        cached = uses_cache(cfg, criterion)
        step, path = student_step(cfg, data_bin, out, teachers, criterion, cache_after if cached else after, init,
                                  cache if cached else None)
        steps.append(step)
        students[student_name(cfg, criterion)] = (step.name, path)
    return steps, students


def generate_steps(cfg: MainJobConfig, data_bin: Path, out: Path, paths: Sequence[Path], model: str,
                   after: Sequence[str]) -> Tuple[List[Step], Dict[str, Path]]:
    """fairseq-generate of every test set with ``model``; returns the steps and set name -> output file."""
    steps, files = [], {}
    for set_name, subset in TEST_SETS.items():
        results = out / "generate" / model / set_name
        steps.append(Step(f"generate_{model}_{set_name}", generate_cmd(
            cfg, data_bin, paths, subset, results, "--nbest", cfg.nbest, "--batch-size", 100), tuple(after)))
        files[set_name] = results / f"generate-{subset}.txt"
    return steps, files


def generate_cmd(cfg: MainJobConfig, data_bin: Path, paths: Sequence[Path], subset: str, results: Path,
                 *extra) -> List:
    """fairseq-generate of ``subset`` with the model (or ensemble) ``paths`` into ``results``."""
    return fairseq_cli("generate") + [
        data_bin, "--user-dir", USER_DIR, "--task", "translation_distillation", "-s", SRC, "-t", TGT,
        "--path", ":".join(map(str, paths)), "--gen-subset", subset, "--beam", str(cfg.beam),
        "--num-workers", "0", *cpu_flag(cfg),
        # translations are about as long as their source: stop runaway hypotheses early
        "--max-len-a", "1.5", "--max-len-b", "10",
        "--results-path", results, *extra]


def evaluate_step(model: str, files: Dict[str, Path], out: Path, after: Sequence[str]) -> Step:
    """proxy-end2-evaluate of one model's generations: report.json/.md and plots in ``reports/<model>``."""
    ood = [arg for name, path in files.items() if name != "id" for arg in ("--ood", f"{name}={path}")]
    return Step(f"evaluate_{model}", [sys.executable, "-m", "proxy_end2.evaluation.cli", "--id", f"id={files['id']}",
                                      *ood, "--out", out / "reports" / model, "--quiet"], tuple(after))


def short_name(model: str) -> str:
    """The summary's name of a model: ``Proxy-EnD^2``, ``Proxy-EnD^2 (seed8)``, ..."""
    base, _, variant = model.partition("-")
    return SHORT_NAMES.get(base, base) + (f" ({variant})" if variant else "")


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

        single = report.get("model", {}).get("kind") == "ensemble" and report["model"].get("members") == 1

        def auc(ood_set, measure):
            value = one(ood[ood_set], measure)
            if value is None or (single and measure == "mutual_information"):  # one model: MI = 0
                return None
            return value["roc_auc"]

        lines.append("| " + " | ".join([
            short_name(model),
            _fmt(sets["id"]["quality"]["bleu"]), _fmt(sets["rare_words"]["quality"]["bleu"]),
            _fmt(auc("rare_words", "mutual_information")), _fmt(auc("permuted", "mutual_information")),
            _fmt(auc("rare_words", "entropy_of_expected")), _fmt(auc("permuted", "entropy_of_expected")),
            _fmt(one(prr["id"], "entropy_of_expected")),
            _fmt(None if single else one(prr["id"], "mutual_information")),
        ]) + " |")
    notes = [
        "",
        "Top-1 hypotheses (n = 1). BLEU: sacrebleu on the in-domain (ID) and rare-words test sets. ROC-AUC (%): "
        "detecting the out-of-domain set (rare words or permuted source) against the ID set, with the "
        "mutual information (MI, knowledge uncertainty; ensemble: members' disagreement, Prior Networks: the "
        "closed-form Dirichlet MI) or the entropy of the expected distribution (EoE, total uncertainty), each "
        "averaged over the hypothesis' tokens. PRR (%): sequence error detection on the ID set "
        "(100 = oracle, 0 = random). A single model has no knowledge uncertainty (MI = 0): '-'. "
        "Full reports: reports/<model>/report.md.",
    ]
    return "\n".join(lines + notes)


def run(cfg: MainJobConfig) -> Dict[str, dict]:
    check_output_folder(cfg)  # before anything is written
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    runner = StepRunner(out, threads=cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.jobs)), env=MALLOC_ENV)
    start = time.time()
    data_bin = prepare_data(cfg, runner)
    # the longest steps first: with fewer job slots than ready steps, they start first
    steps, teachers = teacher_steps(cfg, data_bin, out)
    teacher_names = [step.name for step in steps]
    trained_after: Dict[str, List[str]] = {"ensemble": teacher_names, "teacher1": teacher_names[:1]}
    models: Dict[str, List[Path]] = {"ensemble": teachers, "teacher1": teachers[:1]}
    student_data, student_after = data_bin, teacher_names
    if cfg.student_targets == "ensemble":
        distill_steps, student_data = distillation_data_steps(cfg, data_bin, runner, teachers, teacher_names)
        steps += distill_steps
        student_after = [distill_steps[-1].name]
    student_plan, student_models = student_steps(cfg, student_data, out, teachers, student_after)
    steps += student_plan
    for name, (step_name, checkpoint) in student_models.items():
        models[name] = [checkpoint]
        trained_after[name] = [step_name]
    for model, paths in models.items():
        model_steps, files = generate_steps(cfg, data_bin, out, paths, model, trained_after[model])
        steps += model_steps + [evaluate_step(model, files, out, [s.name for s in model_steps])]
    logger.info(f"{len(steps)} steps, up to {cfg.jobs} at once with {runner.threads} thread(s) each"
                + (f"; {sum(runner.done(s.name) for s in steps)} already done" if runner.done("data") else ""))
    runner.run_steps(steps, jobs=cfg.jobs)
    reports = {model: json.loads((out / "reports" / model / "report.json").read_text()) for model in models}
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    cfg = parse_config(argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s", stream=sys.stderr)
    try:
        run(cfg)
    except OutputFolderError as exc:
        sys.exit(f"main_job.py: error: {exc}")


if __name__ == "__main__":
    main()
