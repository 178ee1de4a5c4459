"""The WMT17 En-De recipe (examples/wmt17_en_de/*.sh) end to end, offline, on CPU, at toy size, in both input
layouts: WMT archives made by this test with the real archive names and inner paths (``--raw-dir``), and plain
parallel text files (``--train-prefix/--valid-prefix/--test-prefix``). Tiny architectures and a few updates
through the scripts' variables; every script runs, then runs again and skips every step."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import REPO_ROOT
from synthetic_data import SyntheticLanguagePair

RECIPE = REPO_ROOT / "examples" / "wmt17_en_de"
SCRIPTS = ("prepare.sh", "train_teachers.sh", "distill.sh", "generate.sh", "evaluate.sh")
TOY = {
    "NUM_TEACHERS": "2", "SPM_VOCAB": "150", "WORKERS": "1",
    "TEACHER_ARCH": "transformer_tiny", "TEACHER_MAX_TOKENS": "1024", "TEACHER_MAX_EPOCH": "2",
    "TEACHER_WARMUP": "5", "TEACHER_LR": "0.005", "TEACHER_LOG_INTERVAL": "5",
    "STUDENT_ARCH": "prior_transformer_tiny", "STUDENT_MAX_TOKENS": "1024", "STUDENT_UPDATE_FREQ": "1",
    "STUDENT_MAX_EPOCH": "1", "STUDENT_WARMUP": "5", "STUDENT_LR": "0.005", "STUDENT_LOG_INTERVAL": "5",
    "TRANSLATE_EXTRA_ARGS": "--max-len-a 1.2 --max-len-b 4 --batch-size 200",
    "BEAM": "2", "NBEST": "2", "GEN_EXTRA_ARGS": "--max-len-a 1.2 --max-len-b 4", "REFERENCE_SETS": "test ood_perm",
    "EVALUATE_ARGS": "--no-plots", "CPU": "1",
}


# ------------------------------------------------------------------------------------------------ toy corpora
def _pairs(n: int, seed: int) -> List[Tuple[str, str]]:
    """``n`` sentence pairs of the synthetic language pair, dressed up with some punctuation to normalise."""
    pair, rng = SyntheticLanguagePair(vocab_size=30, ambiguity=0.2, seed=1), random.Random(seed)
    out = []
    for i in range(n):
        src, tgt = pair.sample_pair(rng, 3, 8)
        en, de = " ".join(src), " ".join(tgt)
        if i % 7 == 0:
            en, de = f"{en} \u201c{src[0]}\u201d !", f"{de} \u201e{tgt[0]}\u201c !"
        out.append((en.capitalize() + " .", de.capitalize() + " ."))
    return out


def _sgm(lines: List[str], setid: str) -> str:
    segs = "".join(f'<seg id="{i + 1}">{line}</seg>\n' for i, line in enumerate(lines))
    return f'<srcset setid="{setid}" srclang="any">\n<doc sysid="ref" docid="toy" genre="news">\n<p>\n{segs}</p>\n</doc>\n</srcset>\n'


def _tgz(path: Path, members: Dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_wmt_archives(raw: Path) -> Dict[str, List[Tuple[str, str]]]:
    """The WMT17 En-De archives (file names and inner paths of the real ones) with toy content."""
    raw.mkdir(parents=True)
    corpora = {"europarl": _pairs(220, 1), "commoncrawl": _pairs(160, 2), "nc": _pairs(120, 3), "rapid": _pairs(100, 4)}
    sides = lambda pairs, k: "".join(p[k] + "\n" for p in pairs)  # noqa: E731
    for archive, stem, key in [("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en", "europarl"),
                               ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en", "commoncrawl"),
                               ("training-parallel-nc-v12.tgz", "training/news-commentary-v12.de-en", "nc"),
                               ("rapid2016.tgz", "rapid2016.de-en", "rapid")]:
        _tgz(raw / archive, {f"{stem}.en": sides(corpora[key], 0), f"{stem}.de": sides(corpora[key], 1)})
    sets = {"nt13": _pairs(30, 5), "nt14": _pairs(40, 6), "nt17": _pairs(30, 7), "fr": _pairs(30, 8)}
    _tgz(raw / "wmt13-test.tgz", {"test/newstest2013-src.en.sgm": _sgm([p[0] for p in sets["nt13"]], "nt13"),
                                  "test/newstest2013-src.de.sgm": _sgm([p[1] for p in sets["nt13"]], "nt13")})
    _tgz(raw / "test-full.tgz", {
        "test-full/newstest2014-deen-src.en.sgm": _sgm([p[0] for p in sets["nt14"]], "nt14"),
        "test-full/newstest2014-deen-ref.de.sgm": _sgm([p[1] for p in sets["nt14"]], "nt14"),
        "test-full/newstest2014-fren-src.fr.sgm": _sgm([p[1].upper() for p in sets["fr"]], "nt14fr")})
    _tgz(raw / "test.tgz", {"test/newstest2017-ende-src.en.sgm": _sgm([p[0] for p in sets["nt17"]], "nt17"),
                            "test/newstest2017-ende-ref.de.sgm": _sgm([p[1] for p in sets["nt17"]], "nt17")})
    _tgz(raw / "test-clean.tar.gz", {
        "LibriSpeech/test-clean/1089/134686/1089-134686.trans.txt":
            "".join(f"1089-134686-{i:04d} {p[0].upper()}\n" for i, p in enumerate(_pairs(12, 9))),
        "LibriSpeech/test-clean/121/121726/121-121726.trans.txt":
            "".join(f"121-121726-{i:04d} {p[0].upper()}\n" for i, p in enumerate(_pairs(8, 10)))})
    return sets


def make_plain_text(root: Path) -> Dict[str, Path]:
    """Plain parallel files PREFIX.xx / PREFIX.yy (another language pair), and one extra OOD source file."""
    root.mkdir(parents=True)
    prefixes = {}
    for name, n, seed in [("corpus", 500, 11), ("dev", 30, 12), ("eval1", 40, 13), ("eval2", 25, 14)]:
        pairs = _pairs(n, seed)
        (root / f"{name}.xx").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
        (root / f"{name}.yy").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
        prefixes[name] = root / name
    (root / "other.txt").write_text("".join(p[1][::-1] + "\n" for p in _pairs(30, 15)), encoding="utf-8")
    return prefixes


# ------------------------------------------------------------------------------------------------ running
def _env(work: Path, extra: Dict[str, str]) -> Dict[str, str]:
    return dict(os.environ, WORK=str(work), PYTHON=sys.executable, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                **TOY, **extra)


def _run_scripts(layout: Dict[str, object], scripts) -> Dict[str, object]:
    """``scripts`` in turn; returns {script: seconds, script:stderr: its standard error} and, on the first failure,
    {"failed": script, "output": the end of its output}."""
    work, extra, prepare_args = layout["work"], layout["env"], layout["args"]
    seconds: Dict[str, object] = {}
    for script in scripts:
        start = time.time()
        proc = subprocess.run(["bash", str(RECIPE / script), *(prepare_args if script == "prepare.sh" else [])],
                              capture_output=True, text=True, env=_env(work, extra), timeout=900)
        seconds[script] = round(time.time() - start, 1)
        if proc.returncode != 0:
            return {"failed": script, "output": proc.stdout[-3000:] + proc.stderr[-6000:]}
        seconds[script + ":stderr"] = proc.stderr
    return seconds


def _lines(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _check_outputs(work: Path, langs: Tuple[str, str], subsets: List[str], students: List[str],
                   references: Dict[str, List[str]], member: bool = True) -> None:
    """The binarised sets and their manifest; every model's translations, uncertainty, BLEU and report; the
    reference scores (with uncertainty) of the ensemble and the students; the summary's rows."""
    data, pair = work / "data-bin", "-".join(langs)
    manifest = [line.split("\t") for line in _lines(data / "sets.tsv") if not line.startswith("#")]
    assert [row[0] for row in manifest] == subsets
    for subset in subsets:
        assert (data / f"{subset}.{pair}.{langs[0]}.bin").exists() and (data / f"{subset}.{pair}.{langs[1]}.idx").exists()
    models = ["ensemble"] + (["teacher1"] if member else []) + [f"student_{c}" for c in students]
    ood = [s for s in subsets if s.startswith("ood_")]
    for model in models:
        decode = work / "generate" / model / "decode"
        for subset in subsets[1:]:
            su = [line for line in _lines(decode / f"uncertainty-{subset}.txt") if line.startswith("SU-")]
            assert len(su) == 2 * len(_lines(work / "text" / "raw" / f"{subset}.{langs[0]}"))  # --nbest 2
        for subset, ref in references.items():
            bleu = json.loads((decode / f"bleu-{subset}.json").read_text())
            assert bleu["sentences"] == len(ref) and 0.0 <= bleu["bleu"] <= 100.0 and bleu["reference"].endswith(
                f"raw/{subset}.{langs[1]}")
        report = json.loads((work / "reports" / model / "decode" / "report.json").read_text())
        assert set(report["ood_detection"]) == set(ood) and report["sets"]["test"]["num_sentences"] == len(
            references["test"])
    for model in ["ensemble"] + [f"student_{c}" for c in students]:  # --score-reference prints uncertainty
        su = [line.split("\t") for line in _lines(work / "generate" / model / "reference" / "uncertainty-test.txt")
              if line.startswith("SU-")]
        assert sorted(int(f[0][3:]) for f in su) == list(range(len(references["test"])))
        assert {f[1] for f in su} == {"0"}
        assert (work / "reports" / model / "reference" / "report.json").exists()
    assert not (work / "generate" / "teacher1" / "reference").exists()  # a member alone: translations only
    rows = [line for line in _lines(work / "summary.md") if line.startswith("| ") and not line.startswith("| model")]
    assert len(rows) == len(models) + 1 + len(students)  # translations: every model; reference scores: the others


def _wmt_layout(tmp_path: Path) -> Dict[str, object]:
    sets = make_wmt_archives(tmp_path / "orig")
    students = ["proxy_dirichlet_distillation", "forward_proxy_dirichlet_distillation"]
    env = {"CRITERIA": " ".join(students), "TEACHER_AVERAGE_LAST": "2"}
    return {"work": tmp_path / "wmt", "env": env, "args": ["--raw-dir", str(tmp_path / "orig")], "sets": sets,
            "students": students}


def _plain_layout(tmp_path: Path) -> Dict[str, object]:
    prefixes = make_plain_text(tmp_path / "corpus")
    students = ["ensemble_kl_distillation", "dirichlet_nll_distillation"]
    env = {"SRC": "xx", "TGT": "yy", "CRITERIA": " ".join(students), "TEACHER_AVERAGE_LAST": "0",
           "STUDENT_TARGETS": "reference", "MODELS": "ensemble " + " ".join(f"student_{c}" for c in students)}
    args = ["--train-prefix", str(prefixes["corpus"]), "--valid-prefix", str(prefixes["dev"]),
            "--test-prefix", f"{prefixes['eval1']},{prefixes['eval2']}",
            "--ood", f"other={tmp_path / 'corpus' / 'other.txt'}"]
    return {"work": tmp_path / "plain", "env": env, "args": args, "students": students}


@pytest.mark.slow
def test_recipe_end_to_end_in_both_layouts(tmp_path):
    """Both layouts side by side (each pipeline is sequential and single-threaded), then every script again:
    nothing is redone; meanwhile an ensemble "trained elsewhere" is plugged into a third work folder. Measured:
    about 310 s of CPU time (user + sys) for the whole test on a shared 2-core machine; on two idle cores that
    is an estimated 2.5-3 minutes of wall time."""
    layouts = {"wmt": _wmt_layout(tmp_path), "plain": _plain_layout(tmp_path)}
    with ThreadPoolExecutor(2) as pool:
        first = dict(zip(layouts, pool.map(lambda c: _run_scripts(c, SCRIPTS), layouts.values())))
    for name, result in first.items():
        assert "failed" not in result, f"{name} layout: {result.get('failed')} failed:\n{result.get('output')}"

    wmt = layouts["wmt"]
    work, raw = wmt["work"], wmt["work"] / "text" / "raw"
    assert _lines(raw / "test.de") == [p[1] for p in wmt["sets"]["nt14"]]  # the SGML segments, untouched
    assert _lines(raw / "ood_fr.en") == [p[1].upper() for p in wmt["sets"]["fr"]]
    libri = _lines(raw / "ood_librispeech.en")
    assert len(libri) == 20 and libri[0][0].isupper() and libri[0][1:-1].islower() and libri[0].endswith(".")
    perm = _lines(raw / "ood_perm.en")
    assert [sorted(s.split()) for s in perm] == [sorted(p[0].split()) for p in wmt["sets"]["nt14"]]
    assert perm != _lines(raw / "test.en")
    assert "\u201e" in (raw / "test.de").read_text() and "\u201e" not in (work / "text" / "norm" / "test.de").read_text()
    assert "average_checkpoints.py" in (work / "logs" / "teacher1.log").read_text()
    # the students learned from the ensemble's translations of every (cleaned) training pair
    assert len(_lines(work / "distill" / "train.de")) == len(_lines(work / "text" / "spm" / "train.clean.de"))
    assert "--teacher-paths" in (work / "logs" / "student_proxy_dirichlet_distillation.log").read_text()
    _check_outputs(work, ("en", "de"), ["valid", "test", "test2017", "ood_perm", "ood_de", "ood_fr", "ood_librispeech"],
                   wmt["students"], {s: _lines(raw / f"{s}.de") for s in ("test", "test2017", "ood_perm")})

    plain = layouts["plain"]
    work, raw = plain["work"], plain["work"] / "text" / "raw"
    assert not (work / "distill").exists()  # STUDENT_TARGETS=reference
    _check_outputs(work, ("xx", "yy"), ["valid", "test", "test1", "ood_perm", "ood_yy", "ood_other"],
                   plain["students"], {s: _lines(raw / f"{s}.yy") for s in ("test", "test1", "ood_perm")}, member=False)

    # again, side by side with an ensemble "trained elsewhere" (the WMT layout's) plugged into a new work folder
    wmt_data = wmt["work"] / "data-bin"
    elsewhere = {"work": tmp_path / "elsewhere", "args": wmt["args"], "env": {
        "SPM_MODEL": str(wmt_data / "spm.model"), "SRC_DICT": str(wmt_data / "dict.en.txt"),
        "TGT_DICT": str(wmt_data / "dict.de.txt"), "TEACHER_PATHS": f"{wmt['work']}/teachers/teacher1.pt:"
        f"{wmt['work']}/teachers/teacher2.pt", "STUDENT_TARGETS": "reference", "CRITERIA": "proxy_dirichlet_distillation",
        "STUDENT_MAX_UPDATE": "2"}}
    with ThreadPoolExecutor(3) as pool:
        plugged_run = pool.submit(_run_scripts, elsewhere, ("prepare.sh", "distill.sh"))
        again = dict(zip(layouts, pool.map(lambda c: _run_scripts(c, SCRIPTS), layouts.values())))
        plugged = plugged_run.result()
    assert "failed" not in plugged, f"plugged-in ensemble: {plugged.get('failed')} failed:\n{plugged.get('output')}"
    for name in ("dict.en.txt", "dict.de.txt", "spm.model"):
        assert (elsewhere["work"] / "data-bin" / name).read_bytes() == (wmt_data / name).read_bytes()
    assert (elsewhere["work"] / "students" / "proxy_dirichlet_distillation.pt").exists()
    assert not (elsewhere["work"] / "teachers").exists()
    for name, result in again.items():
        assert "failed" not in result, f"{name} layout, second run: {result.get('failed')} failed:\n{result.get('output')}"
        for script in SCRIPTS:  # every step skipped: no command ran
            ran = [line for line in str(result[script + ":stderr"]).splitlines() if "] $ " in line]
            assert ran == [], (name, script, ran)
    print({name: {k: v for k, v in r.items() if not k.endswith("stderr")} for name, r in first.items()})
