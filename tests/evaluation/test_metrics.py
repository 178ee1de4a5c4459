"""proxy_end2.evaluation.metrics against hand-computed values and the libraries they wrap."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from sklearn.metrics import average_precision_score, roc_auc_score

from proxy_end2.evaluation import metrics as M

# ---------------------------------------------------------------------------------------------------------------
# OOD detection


def test_roc_auc_four_points_by_hand_and_sklearn():
    id_scores, ood_scores = [0.1, 0.4], [0.35, 0.8]
    # pairs (ood, id) with ood > id: (0.35, 0.1), (0.8, 0.1), (0.8, 0.4); not (0.35, 0.4) -> 3/4
    assert M.roc_auc(id_scores, ood_scores) == pytest.approx(0.75)
    assert M.roc_auc(id_scores, ood_scores) == pytest.approx(roc_auc_score([0, 0, 1, 1], id_scores + ood_scores))


def test_pr_auc_four_points_by_hand_and_sklearn():
    id_scores, ood_scores = [0.1, 0.4], [0.35, 0.8]
    # ranked: 0.8 (OOD) 0.4 (ID) 0.35 (OOD) 0.1 (ID); precision at the OOD hits: 1/1, 2/3 -> AP = (1 + 2/3) / 2
    assert M.pr_auc(id_scores, ood_scores) == pytest.approx((1 + 2 / 3) / 2)
    assert M.pr_auc(id_scores, ood_scores) == pytest.approx(
        average_precision_score([0, 0, 1, 1], id_scores + ood_scores))


def test_ood_ties_and_direction():
    assert M.roc_auc([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)  # ties count 1/2
    assert M.roc_auc([0.0, 1.0], [2.0, 3.0]) == 1.0  # higher = more OOD
    assert M.roc_auc([2.0, 3.0], [0.0, 1.0]) == 0.0


def test_ood_non_finite_scores_rank_as_most_uncertain():
    # NaN / +inf on an OOD sentence: counted as the most uncertain, -inf as the least
    assert M.roc_auc([0.1, 0.2], [np.nan, np.inf]) == 1.0
    assert M.roc_auc([-np.inf, 0.2], [0.1, 0.3]) == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------------------------
# prediction rejection


def test_prr_tiny_example_by_hand():
    errors = np.array([10.0, 0.0, 30.0, 20.0])
    unc = np.array([0.2, 0.1, 0.3, 0.4])  # rejection order: 3, 2, 0, 1 -> errors 20, 30, 10, 0
    c = M.rejection_curves(errors, unc)
    # mean error over all 4 sentences after k rejections: (60, 40, 10, 0, 0) / 4
    np.testing.assert_allclose(c.uncertainty, [15, 10, 2.5, 0, 0])
    np.testing.assert_allclose(c.oracle, [15, 7.5, 2.5, 0, 0])  # oracle order 30, 20, 10, 0
    np.testing.assert_allclose(c.random, [15, 11.25, 7.5, 3.75, 0])
    # trapezoids with step 1/4
    assert c.auc_uncertainty == pytest.approx(0.25 * (12.5 + 6.25 + 1.25 + 0))  # 5.0
    assert c.auc_oracle == pytest.approx(0.25 * (11.25 + 5 + 1.25 + 0))  # 4.375
    assert c.auc_random == pytest.approx(7.5)
    assert c.prr == pytest.approx(100 * (7.5 - 5.0) / (7.5 - 4.375))  # 80
    assert M.prediction_rejection_ratio(errors, unc) == pytest.approx(80.0)


def test_prr_oracle_and_reverse_oracle():
    rng = np.random.default_rng(0)
    errors = rng.uniform(0, 100, size=101)
    assert M.prediction_rejection_ratio(errors, errors) == pytest.approx(100.0)
    assert M.prediction_rejection_ratio(errors, 3 * errors + 7) == pytest.approx(100.0)  # only the order matters
    assert M.prediction_rejection_ratio(errors, -errors) == pytest.approx(-100.0)


def test_prr_random_is_zero_on_average():
    rng = np.random.default_rng(1)
    errors = rng.exponential(30.0, size=50)
    prrs = [M.prediction_rejection_ratio(errors, rng.permutation(50)) for _ in range(2000)]
    assert abs(np.mean(prrs)) < 2.0
    # the expectation over all orders is exactly the random line: equivalent check without sampling noise
    assert M.prediction_rejection_ratio(errors, np.zeros(50)) == pytest.approx(0.0, abs=1e-9)


def test_prr_ties_are_averaged():
    errors = np.array([0.0, 100.0, 50.0, 50.0])
    # sentences 1 and 2 tied as most uncertain: expected error of the first rejection = 75
    c = M.rejection_curves(errors, np.array([0.0, 1.0, 1.0, 0.5]))
    np.testing.assert_allclose(c.uncertainty, np.array([200, 125, 50, 0, 0]) / 4)


def test_prr_undefined_when_all_errors_equal():
    assert math.isnan(M.prediction_rejection_ratio(np.full(5, 40.0), np.arange(5)))
    assert math.isnan(M.prediction_rejection_ratio(np.zeros(5), np.arange(5)))  # every sentence perfect


def test_prr_bounds_random_cases():
    rng = np.random.default_rng(2)
    for _ in range(50):
        e = rng.uniform(0, 100, size=int(rng.integers(2, 30)))
        prr = M.prediction_rejection_ratio(e, rng.normal(size=e.size))
        assert -100 - 1e-9 <= prr <= 100 + 1e-9


# ---------------------------------------------------------------------------------------------------------------
# quality


def test_wer_by_hand():
    ref, hyp = "the cat sat on the mat", "the cat sit on mat"  # 1 substitution + 1 deletion
    assert M.word_edit_distance(ref.split(), hyp.split()) == 2
    np.testing.assert_allclose(M.sentence_wer([hyp], [ref]), [100 * 2 / 6])
    assert M.word_edit_distance("a b".split(), "x a b y z".split()) == 3  # 3 insertions
    assert M.word_edit_distance("a b c".split(), "c b a".split()) == 2
    assert M.word_edit_distance([], "a b".split()) == 2
    # corpus WER pools the edits: (2 + 3) / (6 + 2) words
    assert M.corpus_wer([hyp, "x a b y z"], [ref, "a b"]) == pytest.approx(100 * 5 / 8)
    np.testing.assert_allclose(M.sentence_wer(["", "", "a"], ["a b", "", ""]), [100.0, 0.0, 100.0])


def test_edit_distance_matches_plain_dynamic_programming():
    def slow(r, h):
        d = [[i + j if i * j == 0 else 0 for j in range(len(h) + 1)] for i in range(len(r) + 1)]
        for i in range(1, len(r) + 1):
            for j in range(1, len(h) + 1):
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (r[i - 1] != h[j - 1]))
        return d[-1][-1]

    rng = np.random.default_rng(3)
    for _ in range(200):
        r = list(rng.choice(list("abcd"), size=int(rng.integers(0, 9))))
        h = list(rng.choice(list("abcd"), size=int(rng.integers(0, 9))))
        assert M.word_edit_distance(r, h) == slow(r, h)


def test_corpus_bleu_is_sacrebleu():
    hyps = ["the cat sat on the mat .", "a dog ran", ""]
    refs = ["the cat sat on a mat .", "the dog ran away", "nothing here"]
    assert M.corpus_bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_sentence_bleu_floor_smoothing_by_hand():
    # 1-4 gram precisions 3/4, 2/3, 1/2 and 0/1 -> floor smoothing counts 1.1 matches: 110 %
    expected = (75.0 * (200 / 3) * 50.0 * 110.0) ** 0.25  # brevity penalty 1 (same length)
    np.testing.assert_allclose(M.sentence_bleu(["a b c d"], ["a b c e"]), [expected], rtol=1e-9)
    assert expected == pytest.approx(72.42, abs=0.01)
    # the authors' intent, sacrebleu 2.x call
    pairs = [("a b c d", "a b c e"), ("the cat sat", "the cat sat on the mat"), ("", "x y"), ("x y z", "x y z")]
    ours = M.sentence_bleu([h for h, _ in pairs], [r for _, r in pairs])
    ref = [sacrebleu.sentence_bleu(h, [r], smooth_method="floor", smooth_value=1.1).score for h, r in pairs]
    np.testing.assert_allclose(ours, ref)
    assert ours[2] == 0.0 and ours[3] == 100.0


def test_sentence_errors():
    np.testing.assert_allclose(M.sentence_errors(["x y z"], ["x y z"], "bleu"), [0.0])
    np.testing.assert_allclose(M.sentence_errors(["x"], ["x y"], "wer"), [50.0])
    with pytest.raises(ValueError, match="quality"):
        M.sentence_errors(["x"], ["x"], "ter")


# ---------------------------------------------------------------------------------------------------------------
# N-best aggregation


def test_nbest_uniform_with_missing_hypotheses():
    values = np.array([[1.0, 2.0, 6.0], [4.0, np.nan, np.nan]])
    np.testing.assert_allclose(M.nbest_aggregate(values), [3.0, 4.0])
    np.testing.assert_allclose(M.nbest_weights(values), [[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])


def test_nbest_prob_weights_by_hand():
    values = np.array([[1.0, 3.0], [5.0, np.nan]])
    log_probs = np.array([[math.log(0.3), math.log(0.1)], [-7.0, np.nan]])
    # softmax over the hypotheses: 0.3 / 0.4 and 0.1 / 0.4
    np.testing.assert_allclose(M.nbest_weights(values, log_probs, "prob"), [[0.75, 0.25], [1.0, 0.0]])
    np.testing.assert_allclose(M.nbest_aggregate(values, log_probs, "prob"), [0.75 * 1 + 0.25 * 3, 5.0])


def test_nbest_prob_is_stable_and_falls_back():
    values = np.array([[1.0, 3.0], [2.0, 4.0]])
    log_probs = np.array([[-1000.0, -1000.0 - math.log(3)], [-np.inf, -np.inf]])  # tiny probabilities, 3:1
    np.testing.assert_allclose(M.nbest_aggregate(values, log_probs, "prob"), [0.75 * 1 + 0.25 * 3, 3.0])


def test_nbest_argument_errors():
    with pytest.raises(ValueError, match="log_probs"):
        M.nbest_aggregate(np.ones((2, 2)), None, "prob")
    with pytest.raises(ValueError, match="weighting"):
        M.nbest_aggregate(np.ones((2, 2)), None, "softmax")
    with pytest.raises(ValueError, match=r"\[N, n\]"):
        M.nbest_aggregate(np.ones(3))
