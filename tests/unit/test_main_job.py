"""The main job's plumbing: resumable steps, failure reporting, the summary table (no training here; the
whole pipeline is exercised by tests/integration and by `bash scripts/main_job.sh`)."""
import sys
import time

import pytest

from proxy_end2.main_job import Step, StepRunner, ensemble_targets, read_hypotheses, summarise


def _py(code):
    return [sys.executable, "-c", code]


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


def test_steps_run_in_parallel_after_their_dependencies(tmp_path):
    # each command writes "<start> <end>" (epoch seconds) to its file
    spans = "import sys, time; t = time.time(); time.sleep(float(sys.argv[2])); " \
            "open(sys.argv[1], 'w').write(f'{t} {time.time()}')"
    steps = [
        Step("first", _py(spans) + [tmp_path / "first", 1.0]),
        Step("second", _py(spans) + [tmp_path / "second", 1.0]),
        Step("third", _py(spans) + [tmp_path / "third", 0], after=("first", "second")),
    ]
    runner = StepRunner(tmp_path, threads=1)
    runner.run_steps(steps, jobs=2)
    span = {name: [float(x) for x in (tmp_path / name).read_text().split()] for name in ("first", "second", "third")}
    assert span["first"][0] < span["second"][1] and span["second"][0] < span["first"][1]  # the first two overlap
    assert span["third"][0] >= max(span["first"][1], span["second"][1])  # the third waited for both
    assert all(runner.done(step.name) for step in steps)
    # a second run skips everything (the commands would fail now)
    StepRunner(tmp_path).run_steps([Step(s.name, _py("raise SystemExit(1)"), s.after) for s in steps], jobs=2)


def test_steps_get_the_thread_count(tmp_path):
    runner = StepRunner(tmp_path, threads=3)
    runner.run_steps([Step("env", _py("import os; print(os.environ['OMP_NUM_THREADS'])"))])
    assert (tmp_path / "logs" / "env.log").read_text().splitlines()[1] == "3"


def test_a_failing_step_stops_the_others_and_nothing_after_it_starts(tmp_path):
    steps = [
        Step("slow", _py("import time; time.sleep(60)")),
        Step("bad", _py("import sys, time; time.sleep(0.3); sys.exit(2)")),
        Step("later", _py("print('should not run')"), after=("bad",)),
    ]
    runner = StepRunner(tmp_path)
    start = time.time()
    with pytest.raises(RuntimeError, match="step bad failed with exit code 2"):
        runner.run_steps(steps, jobs=2)
    assert time.time() - start < 30  # "slow" was stopped, not waited for
    assert not any(runner.done(step.name) for step in steps)
    assert not (tmp_path / "logs" / "later.log").exists()


def test_steps_waiting_for_unknown_or_each_other_are_an_error(tmp_path):
    runner = StepRunner(tmp_path)
    with pytest.raises(ValueError, match="unknown steps"):
        runner.run_steps([Step("a", _py("pass"), after=("nope",))])
    with pytest.raises(ValueError, match="wait for each other"):
        runner.run_steps([Step("a", _py("pass"), after=("b",)), Step("b", _py("pass"), after=("a",))])


def test_ensemble_targets_come_from_all_shards_in_corpus_order(tmp_path):
    (tmp_path / "a.txt").write_text("S-2\tx y\nH-2\t-0.1\tc c\nD-2\t-0.1\tc c\nP-2\t-0.1 -0.1\n"
                                    "H-0\t-0.2\ta a\n")
    (tmp_path / "b.txt").write_text("H-1\t-0.5\t\nH-3\t-0.3\td\nH-3\t-0.9\tsecond best\n")
    hypotheses = read_hypotheses([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert hypotheses == {2: "c c", 0: "a a", 1: "", 3: "d"}  # the first (best) H- line of each sentence
    targets, empty = ensemble_targets(hypotheses, ["ref0", "ref1", "ref2", "ref3"])
    assert targets == ["a a", "ref1", "c c", "d"] and empty == 1  # an empty translation keeps its reference
    with pytest.raises(ValueError, match=r"1 of 5 training sentences have no ensemble translation \(first: \[4\]\)"):
        ensemble_targets(hypotheses, ["r"] * 5)


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
