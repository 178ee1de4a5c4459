"""The many-classes example end to end, reduced (K = 10, 100; one seed; 50 steps), through its command line."""
from __future__ import annotations

import math

import pytest

from example_helpers import MANY_CLASSES, run_example

LABELS = ("Proxy-EnD^2", "EnD^2 (c=1)", "EnD^2 (c=0)", "EnD (KL)")
HEADS = ("top1", "top5", "mass90")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("many_classes") / "results"
    return out, run_example(MANY_CLASSES / "run_experiment.py", out)


def _runs(results: dict) -> list[dict]:
    return [run for cell in results["cells"] for run in cell["runs"]]


@pytest.mark.slow
def test_outputs_written(quick_run):
    out, results = quick_run
    assert (out / "many_classes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    for k in (10, 100):
        for label in LABELS + ("ensemble (reference)", "uniform prediction (reference)"):
            assert f"| {k} | {label} |" in table, (k, label)
    assert [c["num_classes"] for c in results["cells"]] == [10, 100]
    assert len(_runs(results)) == 2 * len(LABELS)


@pytest.mark.slow
def test_metrics_are_sane(quick_run):
    _, results = quick_run
    for run in _runs(results):
        m = run["metrics"]
        assert not run["diverged"]
        assert m["kl_softmax"] >= 0 and math.isfinite(m["kl_softmax"])
        assert 0.0 <= m["top1_agreement"] <= 1.0
        assert 0.0 <= m["ood"]["far"]["auc_total"] <= 1.0
        if run["loss"] == "kl":  # a softmax student: no knowledge uncertainty
            assert "spearman_mutual_information" not in m and "auc_mutual_information" not in m["ood"]["far"]
        else:
            assert math.isfinite(m["spearman_mutual_information"]) and m["alpha0_median"] > 0


@pytest.mark.slow
def test_gradient_shares_are_fractions_that_add_up(quick_run):
    _, results = quick_run
    for run in _runs(results):
        assert set(run["gradients"]) == {"0", "5", "25", "50"}  # JSON keys of the probe steps
        for shares in run["gradients"].values():
            for head in HEADS:
                assert 0.0 <= shares[head] <= 1.0
                assert shares[head] + shares[f"tail_{head}"] == pytest.approx(1.0, abs=1e-9)
            assert shares["top1"] <= shares["top5"] + 1e-12


@pytest.mark.slow
def test_students_learn_and_end2_gradient_goes_to_the_tail(quick_run):
    _, results = quick_run
    for cell in results["cells"]:
        k, runs = cell["num_classes"], {r["loss"]: r for r in cell["runs"]}
        kl, proxy = runs["kl"]["metrics"], runs["proxy"]["metrics"]
        assert kl["top1_agreement"] > 1.0 / k  # beats chance
        assert kl["kl_softmax"] < cell["ensemble"]["kl_uniform"]  # better than predicting the uniform distribution
        assert proxy["kl_softmax"] < cell["ensemble"]["kl_uniform"]
        assert proxy["spearman_mutual_information"] > 0.0
        if k == 100:  # the paper's point: at initialisation EnD^2's gradient is on the tail, the proxy's on the head
            assert runs["end2"]["gradients"]["0"]["top5"] < 0.5 < runs["proxy"]["gradients"]["0"]["top5"]
