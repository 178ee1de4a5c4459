"""End to end through the real command lines: fairseq-preprocess -> fairseq-train two teachers ->
fairseq-train --user-dir proxy_end2 a prior_transformer_tiny student with each criterion -> fairseq-generate
with uncertainty -> proxy-end2-evaluate.

About 4 minutes on 2 CPU cores (teachers and students are trained once per module).
"""
import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import SRC, TGT, USER_DIR, run_fairseq, teacher_train_args
from fairseq_helpers import build_task_and_model

pytestmark = pytest.mark.slow

CRITERIA = {
    "proxy_dirichlet_distillation": ["--target-concentration", "mkl", "--target-offset", "1"],
    # the offset-0 parametrisation (alpha = exp(z)); the main job runs EnD^2 with the recipes' offset 1
    "dirichlet_nll_distillation": ["--model-offset", "0"],
    "ensemble_kl_distillation": [],
}
STUDENT_EPOCHS = 12
TEST_SENTENCES = 60


def _epoch_records(log: str, tag: str):
    """fairseq's --log-format json epoch records (``| train | {"epoch": 3, "train_loss": ...}``)."""
    records = []
    for line in log.splitlines():
        start = line.find("{")
        if start >= 0 and f"| {tag} |" in line:
            record = json.loads(line[start:])
            if f"{tag}_loss" in record and "epoch" in record:
                records.append(record)
    return records


def _bleu(text: str) -> float:
    match = re.search(r"BLEU4? = ([0-9.]+)", text)
    assert match, f"no BLEU line in generate output:\n{text[-2000:]}"
    return float(match.group(1))


def _generate(data, path, log_path, task="translation_distillation", subset="test", extra=()):
    return run_fairseq("generate", [
        data, "--user-dir", USER_DIR, "--task", task, "-s", SRC, "-t", TGT, "--path", path,
        "--gen-subset", subset, "--beam", "4", "--batch-size", "16", "--num-workers", "0", "--cpu", *extra],
        log_path)


@pytest.fixture(scope="module")
def teachers(trained_teachers):
    return trained_teachers


@pytest.fixture(scope="module")
def teacher_bleu(tiny_data, teachers, tmp_path_factory):
    log = _generate(tiny_data, ":".join(map(str, teachers)), tmp_path_factory.mktemp("gen") / "ens.log",
                    task="translation", extra=["--required-batch-size-multiple", "1"])
    return _bleu(log)


@pytest.fixture(scope="module")
def students(tiny_data, teachers, tmp_path_factory):
    """criterion -> (checkpoint dir, fairseq-train output) for a student distilled with each criterion."""
    root = tmp_path_factory.mktemp("students")
    out = {}
    for criterion, flags in CRITERIA.items():
        save_dir = root / criterion
        log = run_fairseq("train", [
            tiny_data, "--user-dir", USER_DIR, "--task", "translation_distillation", "-s", SRC, "-t", TGT,
            "--teacher-paths", ":".join(map(str, teachers)),
            "--arch", "prior_transformer_tiny", "--share-decoder-input-output-embed",
            "--criterion", criterion, *flags,
            "--optimizer", "adam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
            "--clip-norm", "1.0", "--max-tokens", "512", "--max-epoch", str(STUDENT_EPOCHS), "--dropout", "0.1",
            "--save-dir", save_dir, "--seed", "3", "--no-epoch-checkpoints",
            "--num-workers", "0", "--log-format", "json", "--log-interval", "1000", "--cpu"],
            root / f"{criterion}.log")
        out[criterion] = (save_dir, log)
    return out


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_distillation_trains(criterion, students):
    _, log = students[criterion]
    assert "teacher ensemble: 2 members" in log
    train = _epoch_records(log, "train")
    assert len(train) == STUDENT_EPOCHS
    first, last = float(train[0]["train_loss"]), float(train[-1]["train_loss"])
    assert last < first - 0.3 * abs(first), (first, last)  # the criterion falls (EnD^2's is negative)
    assert float(train[-1]["train_nll_loss"]) < 0.9 * float(train[0]["train_nll_loss"])
    for key in ("train_nll_loss", "train_ppl", "train_student_alpha0", "train_ensemble_mkl",
                "train_ensemble_precision"):
        assert key in train[-1], key
    assert ("train_target_precision" in train[-1]) == (criterion == "proxy_dirichlet_distillation")
    valid = _epoch_records(log, "valid")
    assert len(valid) == STUDENT_EPOCHS and "valid_ensemble_mkl" in valid[-1]


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_student_checkpoint_holds_the_student_only(criterion, students, tiny_data):
    save_dir, _ = students[criterion]
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)  # the safe loader
    _, _, fresh = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny",
                                                   "--share-decoder-input-output-embed"])
    assert set(state["model"]) == set(fresh.state_dict())
    assert sum(t.numel() for t in state["model"].values()) == sum(t.numel() for t in fresh.state_dict().values())
    assert "criterion" not in state or not state["criterion"]
    n_student = sum(p.numel() for p in fresh.parameters())
    adam_state = state["last_optimizer_state"]["state"]
    assert sum(v["exp_avg"].numel() for v in adam_state.values()) == n_student


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_student_translates_without_teachers(criterion, students, tiny_data, teacher_bleu, tmp_path):
    save_dir, _ = students[criterion]
    bleus = {}
    for task, extra in (("translation_distillation", []), ("translation", ["--required-batch-size-multiple", "1"])):
        out = _generate(tiny_data, save_dir / "checkpoint_best.pt", tmp_path / f"gen_{task}.log", task=task,
                        extra=extra)
        assert sum(line.startswith("H-") for line in out.splitlines()) == TEST_SENTENCES  # none dropped
        bleus[task] = _bleu(out)
    assert bleus["translation"] == bleus["translation_distillation"]  # same beam search
    if criterion == "dirichlet_nll_distillation":
        # EnD^2 converges slowly (the problem the Proxy-Dirichlet loss solves); it must produce output
        assert bleus["translation"] >= 0
    else:
        # the student translates: close to the two-teacher ensemble it learned from
        assert bleus["translation"] > 0.75 * teacher_bleu, (bleus, teacher_bleu)


def _uncertainty_lines(text):
    return [line for line in text.splitlines() if line.startswith("SU-")]


def test_generate_prints_uncertainty_for_every_hypothesis(students, teachers, tiny_data, tmp_path):
    """Stock fairseq-generate, --nbest 2 --results-path: SU-/TU- lines in uncertainty-test.txt next to
    generate-test.txt for the student (Prior Network) and for the teacher ensemble, with default
    --required-batch-size-multiple; without --results-path everything is on standard output."""
    student = students["proxy_dirichlet_distillation"][0] / "checkpoint_best.pt"
    for name, path, kind in (("student", student, "prior_network"),
                             ("ensemble", ":".join(map(str, teachers)), "ensemble")):
        results = tmp_path / name
        _generate(tiny_data, path, tmp_path / f"{name}.log", extra=["--nbest", "2", "--results-path", results])
        fairseq_text = (results / "generate-test.txt").read_text()
        assert not _uncertainty_lines(fairseq_text)
        text = fairseq_text + (results / "uncertainty-test.txt").read_text()
        header = [line for line in text.splitlines() if line.startswith("#SU-columns")]
        assert len(header) == 1 and f"kind={kind}" in header[0]
        hyps = [line for line in text.splitlines() if line.startswith("H-")]
        su = _uncertainty_lines(text)
        assert len(hyps) == len(su) == 2 * TEST_SENTENCES
        assert {line.split("\t")[0][2:] for line in hyps} == {line.split("\t")[0][3:] for line in su}
        assert sum(line.startswith("T-") for line in text.splitlines()) == TEST_SENTENCES  # no collision
        token_header = [line for line in text.splitlines() if line.startswith("#TU-columns")]
        assert len(token_header) == 1
        tu = [line for line in text.splitlines() if line.startswith("TU-")]
        assert len(tu) == len(su) * len(token_header[0].split("\t")[3:])
    stdout = _generate(tiny_data, student, tmp_path / "stdout.log", extra=["--nbest", "2"])
    assert len(_uncertainty_lines(stdout)) == 2 * TEST_SENTENCES


def test_generate_then_evaluate_report(students, teachers, tiny_data, tmp_path):
    """From the student and the ensemble, ID (test) and OOD (test1: rare words, test2: permuted) runs ->
    proxy-end2-evaluate -> report.json, report.md and PNG plots."""
    student = students["proxy_dirichlet_distillation"][0] / "checkpoint_best.pt"
    for name, path in (("student", student), ("ensemble", ":".join(map(str, teachers)))):
        files = {}
        for subset in ("test", "test1", "test2"):
            results = tmp_path / name / subset
            _generate(tiny_data, path, tmp_path / f"{name}_{subset}.log", subset=subset,
                      extra=["--nbest", "2", "--results-path", results])
            files[subset] = results / f"generate-{subset}.txt"
        out = tmp_path / f"report_{name}"
        proc = subprocess.run(
            [sys.executable, "-m", "proxy_end2.evaluation.cli", "--id", f"test={files['test']}",
             "--ood", f"rare={files['test1']}", "--ood", f"perm={files['test2']}", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:]
        report = json.loads((out / "report.json").read_text())
        assert (out / "report.md").exists() and list((out / "plots").glob("*.png"))
        text = json.dumps(report)
        assert "mutual_information" in text and "rare" in text and "perm" in text
