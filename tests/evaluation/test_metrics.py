"""proxy_end2.evaluation.metrics: the one-name module still offers every metric it offered before the split into
one module per concept (quality, ood, rejection, nbest; tested in test_quality/test_ood/test_rejection/
test_nbest), as the same objects."""
from __future__ import annotations

from proxy_end2.evaluation import metrics, nbest, ood, quality, rejection

#: proxy_end2.evaluation.metrics.__all__ before the split
NAMES_BEFORE_THE_SPLIT = [
    "SENTENCE_BLEU_OPTIONS", "corpus_bleu", "corpus_bleu_signature", "sentence_bleu", "word_edit_distance",
    "sentence_wer", "corpus_wer", "sentence_errors", "roc_auc", "pr_auc", "ood_detection_scores",
    "RejectionCurves", "rejection_curves", "prediction_rejection_ratio", "nbest_weights", "nbest_aggregate",
    "rank_safe_scores",
]


def test_metrics_offers_the_same_names_as_before_the_split():
    assert sorted(metrics.__all__) == sorted(NAMES_BEFORE_THE_SPLIT)
    modules = (quality, ood, rejection, nbest)
    for name in NAMES_BEFORE_THE_SPLIT:
        homes = [module for module in modules if name in module.__all__]
        assert len(homes) == 1, (name, homes)
        assert getattr(metrics, name) is getattr(homes[0], name), name
