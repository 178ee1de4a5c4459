"""The main job end to end at toy size (`examples/synthetic/main_job.py`), with the sequence-level
distillation branch: every step runs once, the summary has one row per model, and a second invocation
skips everything. About 2 minutes on 2 CPU cores."""
import json
import re
import subprocess
import sys

import pytest

from conftest import SYNTHETIC_EXAMPLE

TOY = ["--vocab-size", "40", "--train-size", "200", "--valid-size", "30", "--test-size", "20",
       "--teacher-epochs", "1", "--student-epochs", "1", "--beam", "2", "--nbest", "2",
       "--student-targets", "ensemble", "--jobs", "3"]


def _main_job(out, *extra):
    return subprocess.run([sys.executable, str(SYNTHETIC_EXAMPLE / "main_job.py"), "--out", str(out), *TOY, *extra],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_main_job_runs_every_step_then_resumes_without_redoing_any(tmp_path):
    out = tmp_path / "job"
    first = _main_job(out)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| ensemble", "| teacher 1 (single)", "| Proxy-EnD^2", "| EnD^2 (NLL)", "| EnD (KL)"]
    summary = json.loads((out / "summary.json").read_text())
    assert {"teacher3", "distill_data", "student_proxy_dirichlet_distillation",
            "evaluate_ensemble_kl_distillation"} <= set(summary["step_seconds"])
    # the students learned from the ensemble's translations of all 200 training sentences
    assert len((out / "distill" / "train.tgt").read_text().splitlines()) == 200
    assert "--student-init" in (out / "logs" / "student_proxy_dirichlet_distillation.log").read_text()
    for model in ("ensemble", "teacher1", "proxy_dirichlet_distillation"):
        report = json.loads((out / "reports" / model / "report.json").read_text())
        assert report["sets"]["id"]["num_sentences"] == 20
    assert "Proxy-EnD^2" in first.stdout  # the table is printed at the end

    second = _main_job(out)
    assert second.returncode == 0, second.stderr[-3000:]
    planned = re.search(r"(\d+) steps, up to \d+ at once.*; (\d+) already done", second.stderr)
    assert planned is not None, second.stderr[-2000:]
    assert planned.group(1) == planned.group(2)  # every step of the plan was done by the first run
    assert " $ " not in second.stderr and "fairseq_cli" not in second.stderr  # and no command ran again
