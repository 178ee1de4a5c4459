"""The classification examples (digits CNNs, 3-class spiral) end to end, reduced, through their command lines."""
from __future__ import annotations

import math

import pytest

from example_helpers import CLASSIFICATION, run_example

ROW_LABELS = ("ensemble (reference)", "single teacher (member 0)", "Proxy-EnD^2", "EnD^2 (c=1)", "EnD^2 (c=0)",
              "EnD (KL)")
TASKS = {"digits": ("run_digits.py", ("rotated", "inverted"), 0.5), "spiral": ("run_spiral.py", ("ring",), 0.6)}


@pytest.fixture(scope="module", params=sorted(TASKS))
def quick_run(request, tmp_path_factory):
    script, ood_names, min_accuracy = TASKS[request.param]
    out = tmp_path_factory.mktemp(request.param) / "results"
    return request.param, out, run_example(CLASSIFICATION / script, out), ood_names, min_accuracy


@pytest.mark.slow
def test_classification_example(quick_run):
    name, out, results, ood_names, min_accuracy = quick_run
    table = (out / "results.md").read_text()
    for label in ROW_LABELS:
        assert f"| {label} |" in table, label
    if name == "spiral":
        assert (out / "uncertainty_maps.png").read_bytes()[:4] == b"\x89PNG"
    (seed,) = results["seeds"]
    for model in [seed["ensemble"], seed["single_teacher"]] + [r["metrics"] for r in seed["runs"]]:
        assert 0.0 <= model["accuracy"] <= 1.0 and 0.0 <= model["ece"] <= 1.0
        assert math.isfinite(model["nll"]) and model["nll"] > 0
        assert set(model["ood"]) == set(ood_names)
    # the teachers and the softmax (EnD) student learnt the task: far above chance (1/K)
    assert seed["ensemble"]["accuracy"] > min_accuracy
    kl_student = next(r["metrics"] for r in seed["runs"] if r["loss"] == "kl")
    assert kl_student["accuracy"] > min_accuracy and kl_student["top1_agreement"] > min_accuracy
