"""proxy-end2-evaluate end to end on fake fairseq-generate outputs (docs/output-format.md), and its Python API."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import sacrebleu

from proxy_end2.evaluation import metrics, read_generate_output
from proxy_end2.evaluation.cli import main
from proxy_end2.evaluation.report import evaluate, render_markdown

WORDS = "the a cat dog sat on mat house red blue big small runs walks quickly slowly".split()
PN_COLUMNS = ("log_prob", "score", "entropy_of_expected", "mutual_information")
ENSEMBLE_COLUMNS = ("log_prob", "score", "pe_total", "ep_total", "data", "pe_knowledge", "ep_knowledge")


def fake_generate_output(
    path: Path,
    n_sentences: int,
    *,
    seed: int,
    nbest: int = 3,
    ood_shift: float = 0.0,
    references: bool = True,
    kind: str = "prior_network",
    columns: Sequence[str] = PN_COLUMNS,
    uncertainty: bool = True,
) -> Path:
    """A fairseq-generate output with uncertainty lines: batches of 7 shuffled ids; each sentence's hypotheses
    are its reference with a fraction ``err`` of the words replaced. ``score`` follows ``err`` (useful for
    prediction rejection), ``entropy_of_expected`` is shifted by ``ood_shift`` (useful for OOD detection),
    ``mutual_information`` is noise. Some sentences get fewer hypotheses, some hypotheses are empty."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n_sentences)
    lines: List[str] = ["2024-05-01 10:00:00 | INFO | fairseq_cli.generate | {'_name': None, 'common': {...}}"]
    if uncertainty:
        lines.append(f"#SU-columns\tkind={kind}\tmembers=1\t" + "\t".join(columns))
        lines.append(f"#TU-columns\tkind={kind}\tmembers=1\ttoken_nll")
    for start in range(0, n_sentences, 7):
        for sid in ids[start:start + 7]:
            ref = [WORDS[k] for k in rng.integers(0, len(WORDS), int(rng.integers(3, 10)))]
            err = float(rng.random())
            lines.append(f"S-{sid}\t" + " ".join(reversed(ref)))
            if references:
                lines.append(f"T-{sid}\t" + " ".join(ref))
            n_hyps = nbest if sid % 5 else max(1, nbest - 1)
            for rank in range(n_hyps):
                hyp = [w if rng.random() > err else WORDS[int(rng.integers(len(WORDS)))] for w in ref]
                text = "" if sid % 11 == 3 and rank == 1 else " ".join(hyp)
                length = len(text.split()) + 1
                log_prob = -float(rng.random()) * 5 - rank
                score2 = log_prob / np.log(2) / length
                lines += [f"H-{sid}\t{score2:.4f}\t{text}", f"D-{sid}\t{score2:.4f}\t{text}",
                          f"P-{sid}\t" + " ".join(["-0.1000"] * length)]
                if not uncertainty:
                    continue
                values = {"log_prob": log_prob, "score": err + 0.3 * rng.random(),
                          "entropy_of_expected": rng.random() + ood_shift, "mutual_information": rng.random()}
                lines.append(f"SU-{sid}\t{rank}\t{length}\t"
                             + "\t".join("%.6g" % values.get(c, rng.random()) for c in columns))
                lines.append(f"TU-{sid}\t{rank}\ttoken_nll\t" + " ".join("%.6g" % v for v in rng.random(length)))
    lines.append("2024-05-01 10:00:01 | INFO | fairseq_cli.generate | NOTE: hypothesis and token scores are output "
                 "in base 2")
    lines.append(f"2024-05-01 10:00:01 | INFO | fairseq_cli.generate | Translated {n_sentences:,} sentences "
                 f"(1,234 tokens) in 1.0s (50.00 sentences/s, 500.00 tokens/s)")
    if references:
        lines.append("Generate test with beam=5: BLEU4 = 41.23, 70.1/47.2/34.0/25.4 (BP=1.000, ratio=1.012, "
                     "syslen=1000, reflen=988)")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate_cli")
    return {
        "id": fake_generate_output(root / "generate-test.txt", 120, seed=1),
        "ood": fake_generate_output(root / "generate-test9.txt", 90, seed=2, ood_shift=0.8, references=False),
        "ood_refs": fake_generate_output(root / "generate-test5.txt", 60, seed=3, ood_shift=0.3),
        "ensemble": fake_generate_output(root / "ens.txt", 30, seed=4, kind="ensemble", columns=ENSEMBLE_COLUMNS),
        "plain": fake_generate_output(root / "plain.txt", 30, seed=5, uncertainty=False),
        "nbest1": fake_generate_output(root / "n1.txt", 30, seed=6, nbest=1),
    }


def test_cli_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["--id", f"newstest={files['id']}", "--ood", f"perm={files['ood']}", "--out", str(out),
               "--nbest", "1", "3", "--weighting", "uniform", "prob"])
    assert rc == 0
    stdout = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert stdout.strip() == md.strip() == render_markdown(report).strip()
    for title in ("## Quality (top-1 hypothesis)", "## OOD detection: newstest (ID, 120) vs perm (OOD, 90)",
                  "## Sequence error detection on newstest (ID): PRR",
                  "| measure | n=1 ROC | n=1 PR | n=3 uniform ROC"):
        assert title in md

    assert report["settings"]["id_set"] == "newstest" and report["settings"]["ood_sets"] == ["perm"]
    assert report["settings"]["nbest"] == [1, 3] and report["settings"]["weightings"] == ["uniform", "prob"]
    assert report["model"] == {"kind": "prior_network", "members": 1, "columns": list(PN_COLUMNS),
                               "measures": ["score", "entropy_of_expected", "mutual_information"]}

    # quality of the top-1 hypothesis = sacrebleu / hand WER on the parsed files
    run = read_generate_output(files["id"])
    hyps, refs = run.hypotheses(0), run.references()
    sets = report["sets"]
    assert sets["newstest"]["quality"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert sets["newstest"]["quality"]["wer"] == pytest.approx(metrics.corpus_wer(hyps, refs))
    assert sets["newstest"]["num_sentences"] == 120 and sets["newstest"]["max_nbest"] == 3
    assert sets["newstest"]["min_nbest"] == 2 and sets["newstest"]["fairseq_bleu"] == 41.23
    assert sets["perm"]["quality"] is None and not sets["perm"]["has_references"]
    assert sets["perm"]["pr_auc_chance"] == pytest.approx(100 * 90 / 210)
    assert any("'perm' has no reference (T-) lines" in n for n in report["notes"])

    # OOD detection: the shifted measure separates, the noise does not; n = 1 equals a direct computation
    ood = report["ood_detection"]["perm"]
    assert set(ood) == {"1", "3"} and set(ood["3"]) == {"uniform", "prob"}
    assert ood["1"]["uniform"]["entropy_of_expected"]["roc_auc"] > 90
    assert ood["3"]["prob"]["entropy_of_expected"]["pr_auc"] > 85
    assert 30 < ood["1"]["uniform"]["mutual_information"]["roc_auc"] < 70
    ood_run = read_generate_output(files["ood"])
    direct = metrics.roc_auc(run.su_matrix("entropy_of_expected", 1)[:, 0],
                             ood_run.su_matrix("entropy_of_expected", 1)[:, 0])
    assert ood["1"]["uniform"]["entropy_of_expected"]["roc_auc"] == pytest.approx(100 * direct)
    assert ood["1"]["uniform"] == ood["1"]["prob"]  # n = 1: the weighting does not matter
    assert "log_prob" not in ood["1"]["uniform"]

    # prediction rejection on the ID set: score tracks the error, noise does not
    prr = report["prr"]
    assert set(prr) == {"newstest"}
    assert prr["newstest"]["1"]["uniform"]["score"] > 50
    assert abs(prr["newstest"]["1"]["uniform"]["mutual_information"]) < 40
    errors = metrics.sentence_errors(hyps, refs, "bleu")
    assert prr["newstest"]["1"]["uniform"]["score"] == pytest.approx(
        metrics.prediction_rejection_ratio(errors, run.su_matrix("score", 1)[:, 0]))

    # plots: for n = 1 one per set, for n = 3 one per weighting
    expected = {f"plots/{kind}_{c}.png" for kind in ("rejection_newstest", "hist_newstest_vs_perm")
                for c in ("n1", "n3_uniform", "n3_prob")}
    assert set(report["plots"]) == expected
    for rel in expected:
        data = (out / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cli_wer_quality_default_nbest_no_plots(files, tmp_path, capsys):
    out = tmp_path / "wer"
    assert main(["--id", str(files["id"]), "--ood", str(files["ood"]), "--ood", str(files["ood_refs"]),
                 "--out", str(out), "--quality", "wer", "--weighting", "prob", "--no-plots", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    report = json.loads((out / "report.json").read_text())
    # sets named after their files
    assert report["settings"]["id_set"] == "test" and report["settings"]["ood_sets"] == ["test9", "test5"]
    assert report["settings"]["nbest"] == [1, 3] and report["settings"]["weightings"] == ["prob"]
    assert report["plots"] == [] and not (out / "plots").exists()
    run = read_generate_output(files["id"])
    errors = metrics.sentence_wer(run.hypotheses(0), run.references())
    assert report["prr"]["test"]["1"]["prob"]["score"] == pytest.approx(
        metrics.prediction_rejection_ratio(errors, run.su_matrix("score", 1)[:, 0]))
    assert report["sets"]["test"]["quality"]["mean_sentence_error"] == pytest.approx(errors.mean())
    # PRR on every set with references (the OOD set test5 too), not on test9 (no T- lines)
    assert set(report["prr"]) == {"test", "test5"} and report["prr"]["test5"]["3"]["prob"]["score"] > 50
    assert report["sets"]["test5"]["quality"]["bleu"] > 0


def test_id_set_without_references_still_does_ood(files, tmp_path):
    report = evaluate(files["ood"], {"newstest": files["id"]}, id_name="perm", nbest=1)
    assert report["prr"] == {"newstest": report["prr"]["newstest"]}  # only the set with references
    assert report["sets"]["perm"]["quality"] is None
    assert report["ood_detection"]["newstest"]["1"]["uniform"]["entropy_of_expected"]["roc_auc"] < 10
    assert any("the ID set 'perm' has no reference (T-) lines" in n and "cannot be computed" in n
               for n in report["notes"])
    assert "n/a (no T- lines)" in render_markdown(report)


def test_python_api_with_runs(files):
    id_run = read_generate_output(files["id"], "newstest")
    ood_run = read_generate_output(files["ood"], "perm")
    report = evaluate(id_run, [ood_run], nbest=3, weightings=["uniform"])
    assert report["settings"]["nbest"] == [3] and list(report["ood_detection"]["perm"]) == ["3"]
    assert report["plots"] == []
    json.dumps(report, allow_nan=False)  # serialisable as is


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ood", "ens={ensemble}"], "different models"),
        (["--ood", "plain={plain}"], "--user-dir proxy_end2 --task translation_distillation"),
        (["--ood", "x={id}/missing.txt"], "no such file"),
        (["--ood", "n1={nbest1}", "--nbest", "3"], "has at most 1 hypotheses per sentence"),
        (["--ood", "newstest={ood}"], "set names must be unique"),
    ],
)
def test_cli_errors(files, tmp_path, capsys, args, message):
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    rc = main(["--id", f"newstest={files['id']}", "--out", str(tmp_path / "err"), "--no-plots"] + args)
    err = capsys.readouterr().err
    assert rc == 1 and "proxy-end2-evaluate: error:" in err and message in err


def test_cli_truncated_file(files, tmp_path, capsys):
    truncated = tmp_path / "generate-cut.txt"
    truncated.write_text("".join(files["id"].read_text().splitlines(keepends=True)[:-40]))
    rc = main(["--id", f"cut={truncated}", "--ood", f"perm={files['ood']}", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and str(truncated) in err and "truncated" in err


def test_console_script_installed():
    """``proxy-end2-evaluate`` is declared in setup.py and installed next to this interpreter (pip install -e .).
    Checked through the package metadata; running it is test_cli_runs_without_fairseq_and_torch."""
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("proxy-end2-evaluate") == "proxy_end2.evaluation.cli:main"
    assert (Path(sys.executable).parent / "proxy-end2-evaluate").exists()


# ---------------------------------------------------------------------------------------------------------------
# uncertainty lines in a separate file: --results-path (found next to generate-X.txt) or --uncertainty-output


def split_output(single: Path, generate: Path, uncertainty: Path) -> None:
    """Write the lines of a one-stream output as fairseq's file and our writer's file."""
    lines = single.read_text().splitlines(keepends=True)
    ours = ("#SU-columns", "#TU-columns", "SU-", "TU-")
    generate.parent.mkdir(parents=True, exist_ok=True)
    generate.write_text("".join(line for line in lines if not line.startswith(ours)))
    uncertainty.write_text("".join(line for line in lines if line.startswith(ours)))


def without_paths(report: dict) -> dict:
    for info in report["sets"].values():
        info.pop("path"), info.pop("uncertainty_path")
    return report


def test_cli_uncertainty_in_separate_files(files, tmp_path, capsys):
    ref_out, out = tmp_path / "single", tmp_path / "split"
    common = ["--nbest", "1", "3", "--no-plots", "--quiet"]
    assert main(["--id", f"newstest={files['id']}", "--ood", f"perm={files['ood']}", "--ood", f"t5={files['ood_refs']}",
                 "--out", str(ref_out)] + common) == 0
    results = tmp_path / "results"  # --results-path: the uncertainty file is found next to generate-test.txt
    split_output(files["id"], results / "generate-test.txt", results / "uncertainty-test.txt")
    # --uncertainty-output FILE: any names, given as NAME=FILE,UNCERTAINTY_FILE (or FILE,UNCERTAINTY_FILE)
    split_output(files["ood"], tmp_path / "perm.out", tmp_path / "perm.unc")
    split_output(files["ood_refs"], tmp_path / "t5.out", tmp_path / "t5.unc")
    assert main(["--id", f"newstest={results / 'generate-test.txt'}",
                 "--ood", f"perm={tmp_path / 'perm.out'},{tmp_path / 'perm.unc'}",
                 "--ood", f"{tmp_path / 't5.out'},{tmp_path / 't5.unc'}", "--out", str(out)] + common) == 0
    assert "wrote" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    sets = report["sets"]
    assert (sets["newstest"]["path"], sets["newstest"]["uncertainty_path"]) == (
        str(results / "generate-test.txt"), str(results / "uncertainty-test.txt"))
    assert sets["perm"]["uncertainty_path"] == str(tmp_path / "perm.unc")
    assert report["settings"]["ood_sets"] == ["perm", "t5"]  # named after t5.out
    expected = json.loads((ref_out / "report.json").read_text())
    assert expected["sets"]["newstest"]["uncertainty_path"] is None
    assert without_paths(report) == without_paths(expected)  # the same numbers, wherever the lines are


@pytest.mark.parametrize(
    "spec, message",
    [
        ("perm=", "expected NAME=FILE or NAME=FILE,UNCERTAINTY_FILE"),
        ("={ood}", "expected NAME=FILE or NAME=FILE,UNCERTAINTY_FILE"),
        ("perm={ood},", "expected NAME=FILE or NAME=FILE,UNCERTAINTY_FILE"),
        ("perm={ood},{ood}.missing", "--ood {ood}.missing: no such file"),
        ("perm={ood}.missing,{ood}", "--ood {ood}.missing: no such file"),
    ],
)
def test_cli_bad_set_spec(files, tmp_path, capsys, spec, message):
    spec, message = (x.format(ood=files["ood"]) for x in (spec, message))
    rc = main(["--id", f"newstest={files['id']}", "--ood", spec, "--out", str(tmp_path / "o"), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 1 and "proxy-end2-evaluate: error: " in err and message in err


def test_cli_missing_or_truncated_uncertainty_file(files, tmp_path, capsys):
    generate, uncertainty = tmp_path / "generate-test.txt", tmp_path / "uncertainty-test.txt"
    split_output(files["id"], generate, uncertainty)
    lines = uncertainty.read_text().splitlines(keepends=True)
    uncertainty.write_text("".join(lines[: len(lines) // 2]))  # cut short
    args = ["--id", f"newstest={generate}", "--ood", f"perm={files['ood']}", "--out", str(tmp_path / "o")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"the uncertainty file {uncertainty} may be cut short" in err and f"{generate}:" in err
    uncertainty.unlink()  # missing
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"no #SU-columns header and no SU- line in {generate}, and there is no uncertainty file {uncertainty}" in err


# ---------------------------------------------------------------------------------------------------------------
# fast start: the evaluator never imports fairseq or torch

REPO_ROOT = Path(__file__).resolve().parents[2]

_RUN_WITH_FAIRSEQ_AND_TORCH_BLOCKED = textwrap.dedent(
    r"""
    import importlib.abc
    import importlib.util
    import runpy
    import sys

    BLOCKED = ("fairseq", "fairseq_cli", "torch")
    attempts = []

    def blocked(name):
        return name.split(".")[0] in BLOCKED

    class Block(importlib.abc.MetaPathFinder):
        # first finder: importing a blocked package fails as if it were not installed
        def find_spec(self, name, path=None, target=None):
            if blocked(name):
                attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by test)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    real_find_spec = importlib.util.find_spec
    # proxy_end2/__init__.py asks find_spec("fairseq") whether to register the fairseq components
    importlib.util.find_spec = lambda name, package=None: None if blocked(name) else real_find_spec(name, package)
    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the block of {name} did not work")
    attempts.clear()

    sys.argv = ["proxy-end2-evaluate"] + sys.argv[1:]
    try:
        runpy.run_module("proxy_end2.evaluation.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        assert exc.code == 0, f"exit status {exc.code}"
    else:
        raise AssertionError("the CLI did not exit")
    loaded = sorted(m for m in sys.modules if blocked(m))
    assert not loaded, f"loaded: {loaded}"
    assert not attempts, f"imports attempted: {attempts}"
    print("NO-FAIRSEQ-NO-TORCH-OK", file=sys.stderr)
    """
)


def test_cli_runs_without_fairseq_and_torch(files, tmp_path):
    """``python -m proxy_end2.evaluation.cli`` in a fresh interpreter where fairseq and torch cannot be imported
    (nor found by ``importlib.util.find_spec``): it writes the report (plots included) and never tries to import
    them, so it starts fast and runs where they are not installed."""
    out = tmp_path / "report"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_WITH_FAIRSEQ_AND_TORCH_BLOCKED, "--id", f"newstest={files['id']}",
         "--ood", f"perm={files['ood']}", "--out", str(out), "--nbest", "1", "--quiet"],
        cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "NO-FAIRSEQ-NO-TORCH-OK" in proc.stdout, proc.stdout[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["id_set"] == "newstest" and len(report["plots"]) == 2
    assert report["ood_detection"]["perm"]["1"]["uniform"]["entropy_of_expected"]["roc_auc"] > 90


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case, message", [
    ("empty_id", "no H- "),
    ("log_only_ood", "no H- "),
    ("truncated_id", "cut short"),
    ("id_and_ood_of_other_models", "different models"),
    ("ood_with_fewer_hypotheses", "has at most 1 hypotheses per sentence"),
])
def test_bad_input_is_refused_before_anything_is_written(files, tmp_path, capsys, case, message):
    """Empty, log-only or truncated fairseq-generate output, and ID/OOD files that do not belong together: an
    error naming the problem; an earlier report in --out is left byte for byte, a new --out is not created."""
    out = tmp_path / "report"
    assert main(["--id", f"newstest={files['id']}", "--ood", f"perm={files['ood']}", "--out", str(out),
                 "--quiet", "--no-plots"]) == 0
    before = _snapshot(out)
    assert "report.json" in before
    id_file, ood_file, extra = files["id"], files["ood"], ["--nbest", "1", "3"]
    bad = tmp_path / "generate-bad.txt"
    if case == "empty_id":
        bad.write_text("")
        id_file = bad
    elif case == "log_only_ood":
        bad.write_text("2026-01-01 10:00:00 | INFO | fairseq_cli.generate | loading model(s) from student.pt\n")
        ood_file = bad
    elif case == "truncated_id":
        bad.write_text("".join(files["id"].read_text().splitlines(keepends=True)[:-25]))
        id_file = bad
    elif case == "id_and_ood_of_other_models":
        ood_file = files["ensemble"]
    else:
        ood_file, extra = files["nbest1"], ["--nbest", "3"]
    capsys.readouterr()
    for target in (out, tmp_path / "new_report"):
        rc = main(["--id", f"newstest={id_file}", "--ood", f"other={ood_file}", "--out", str(target)] + extra)
        err = capsys.readouterr().err
        assert rc == 1 and "proxy-end2-evaluate: error:" in err and message in err, err
    assert _snapshot(out) == before
    assert not (tmp_path / "new_report").exists()
