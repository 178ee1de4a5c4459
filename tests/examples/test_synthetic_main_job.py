"""The main job's plumbing: resumable steps, failure reporting, the summary table (no training here; the
whole pipeline is exercised by test_synthetic_end_to_end.py and by `bash examples/synthetic/run.sh`)."""
import sys

import pytest

from config import parse_config
from main_job import ensemble_targets, read_hypotheses, student_steps, summarise
from step_runner import Step, StepRunner


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
    # "first" and "second" each announce themselves and wait for the other: run one after the other, the first
    # would give up and fail; "third" checks that both have finished before it starts
    rendezvous = ("import sys, time, pathlib; d = pathlib.Path(sys.argv[1]); (d / (sys.argv[2] + '.started')).touch(); "
                  "deadline = time.monotonic() + 60\n"
                  "while not (d / (sys.argv[3] + '.started')).exists():\n"
                  "    assert time.monotonic() < deadline, 'the other step never started'; time.sleep(0.01)\n"
                  "(d / (sys.argv[2] + '.finished')).touch()")
    check = "import sys, pathlib; d = pathlib.Path(sys.argv[1]); assert (d / 'first.finished').exists() and " \
            "(d / 'second.finished').exists()"
    steps = [
        Step("first", _py(rendezvous) + [tmp_path, "first", "second"]),
        Step("second", _py(rendezvous) + [tmp_path, "second", "first"]),
        Step("third", _py(check) + [tmp_path], after=("first", "second")),
    ]
    runner = StepRunner(tmp_path, threads=1)
    runner.run_steps(steps, jobs=2)
    assert all(runner.done(step.name) for step in steps)
    # a second run skips everything (the commands would fail now)
    StepRunner(tmp_path).run_steps([Step(s.name, _py("raise SystemExit(1)"), s.after) for s in steps], jobs=2)


def test_steps_get_the_thread_count(tmp_path):
    runner = StepRunner(tmp_path, threads=3)
    runner.run_steps([Step("env", _py("import os; print(os.environ['OMP_NUM_THREADS'])"))])
    assert (tmp_path / "logs" / "env.log").read_text().splitlines()[1] == "3"


def test_a_failing_step_stops_the_others_and_nothing_after_it_starts(tmp_path):
    finished = tmp_path / "slow.finished"
    steps = [
        # "slow" would write its file after 60 s; stopped when "bad" fails, it never does
        Step("slow", _py(f"import time, pathlib; time.sleep(60); pathlib.Path({str(finished)!r}).touch()")),
        Step("bad", _py("import sys, time; time.sleep(0.3); sys.exit(2)")),
        Step("later", _py("print('should not run')"), after=("bad",)),
    ]
    runner = StepRunner(tmp_path)
    with pytest.raises(RuntimeError, match="step bad failed with exit code 2"):
        runner.run_steps(steps, jobs=2)
    assert not finished.exists()  # "slow" was stopped, not waited for
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


def test_teacher_cache_is_built_once_for_the_criteria_that_support_it(tmp_path):
    cfg = parse_config(["--teacher-cache", "--cache-topk", "16", "--student-seed", "8"])
    teachers = [tmp_path / "t1.pt", tmp_path / "t2.pt"]
    steps, students = student_steps(cfg, tmp_path / "data-bin", tmp_path, teachers, ["teacher1", "teacher2"])
    by_name = {step.name: step for step in steps}
    cache_step = by_name["teacher_cache_data-bin_top16"]
    assert cache_step.after == ("teacher1", "teacher2") and "--topk" in cache_step.cmd
    cache_dir = tmp_path / "teacher_cache" / "data-bin-top16"
    assert set(students) == {"proxy_dirichlet_distillation-cache-seed8", "ensemble_kl_distillation-cache-seed8",
                             "dirichlet_nll_distillation-seed8"}  # EnD^2 cannot use the cache: online
    for name, (step_name, _) in students.items():
        command = by_name[step_name].cmd
        assert (cache_dir in command) == ("-cache" in name)
        assert by_name[step_name].after == ((cache_step.name,) if "-cache" in name else ("teacher1", "teacher2"))
    assert not any(s.name.startswith("teacher_cache") for s in student_steps(
        parse_config([]), tmp_path / "data-bin", tmp_path, teachers, ["teacher1"])[0])


def test_seed_comparison_groups_students_by_name_and_seed(tmp_path):
    import json

    from compare_seeds import rows

    for name, bleu in (("proxy", 70.0), ("proxy-seed8", 71.0), ("proxy-seed9", 72.0), ("proxy-cache", 60.0),
                       ("proxy-cache-seed8", 62.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(_report(bleu, 90.0, 80.0, 40.0)))
    table = rows(tmp_path, ["proxy", "proxy-cache"])
    assert "| proxy | 3 | BLEU ID | 71.00 | 1.00 | 70.0, 71.0, 72.0 |" in table
    assert "| proxy-cache | 2 | BLEU ID | 61.00 | 1.41 | 60.0, 62.0 |" in table
    assert "| proxy | 3 | ROC-AUC perm: MI | 91.00 | 0.00 | 91.0, 91.0, 91.0 |" in table
    with pytest.raises(SystemExit, match="no report of kl"):
        rows(tmp_path, ["kl"])
