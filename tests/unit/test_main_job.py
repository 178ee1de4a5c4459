"""The main job's plumbing: resumable steps, failure reporting, the summary table (no training here; the
whole pipeline is exercised by tests/integration and by `bash scripts/main_job.sh`)."""
import sys

import pytest

from proxy_end2.main_job import StepRunner, summarise


def test_steps_are_skipped_once_done(tmp_path):
    runner = StepRunner(tmp_path)
    assert not runner.done("a")
    out = runner.run("a", [sys.executable, "-c", "print('hello')"])
    assert out == "hello\n"
    assert (tmp_path / "logs" / "a.log").read_text().splitlines()[1:] == ["hello"]  # command, then output
    runner.mark_done("a", 1.0)
    assert StepRunner(tmp_path).done("a")  # a new run of the job sees it


def test_failing_step_names_its_log_and_is_not_marked_done(tmp_path):
    runner = StepRunner(tmp_path)
    with pytest.raises(RuntimeError, match=r"step b failed with exit code 3; full log: .*b\.log"):
        runner.run("b", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    assert not runner.done("b")


def _report(bleu, auc_mi, auc_eoe, prr):
    def ood(mi, eoe):
        return {"1": {"uniform": {"mutual_information": {"roc_auc": mi, "pr_auc": 50.0},
                                  "entropy_of_expected": {"roc_auc": eoe, "pr_auc": 50.0}}}}

    return {
        "sets": {"id": {"quality": {"bleu": bleu}}, "rare_words": {"quality": {"bleu": bleu - 10}},
                 "permuted": {"quality": {"bleu": 5.0}}},
        "ood_detection": {"rare_words": ood(auc_mi, auc_eoe), "permuted": ood(auc_mi + 1, auc_eoe + 1)},
        "prr": {"id": {"1": {"uniform": {"entropy_of_expected": prr, "mutual_information": prr - 5}}}},
    }


def test_summary_table_has_one_row_per_model():
    table = summarise({"ensemble": _report(60.0, 80.0, 70.0, 50.0),
                       "proxy_dirichlet_distillation": _report(59.5, 78.0, 69.0, 48.0)})
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | BLEU ID |")
    assert rows[1] == "| ensemble | 60.0 | 50.0 | 80.0 | 81.0 | 70.0 | 71.0 | 50.0 | 45.0 |"
    assert rows[2].startswith("| Proxy-EnD^2 | 59.5 |")
