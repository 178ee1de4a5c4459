"""proxy_end2.evaluation.metrics: the one-name module still offers every metric (the same objects as the modules
of one concept each, which test_quality/test_ood/test_rejection/test_nbest test)."""
from __future__ import annotations

from proxy_end2.evaluation import metrics, nbest, ood, quality, rejection


def test_metrics_re_exports_every_public_name_of_the_metric_modules():
    modules = (quality, ood, rejection, nbest)
    expected = {name: getattr(module, name) for module in modules for name in module.__all__}
    assert sorted(metrics.__all__) == sorted(expected)
    for name, obj in expected.items():
        assert getattr(metrics, name) is obj, name
