"""proxy_end2.evaluation.quality against hand-computed values and the libraries it wraps (sacrebleu,
editdistance)."""
from __future__ import annotations

import numpy as np
import pytest
import sacrebleu

from proxy_end2.evaluation import quality as M


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
    # plain str words as sentence_wer passes them, some differing only in case, longer sequences
    vocab = ["the", "The", "cat", "cats", "sat", "on", "mat", "a", "@@", "x"]
    for _ in range(200):
        r = [vocab[k] for k in rng.integers(0, len(vocab), int(rng.integers(0, 25)))]
        h = [vocab[k] for k in rng.integers(0, len(vocab), int(rng.integers(0, 25)))]
        assert M.word_edit_distance(r, h) == slow(r, h)


def test_edit_distance_counts_words_not_characters():
    assert M.word_edit_distance(["ab"], ["ba"]) == 1  # one substituted word, not two character edits
    assert M.word_edit_distance(["The", "cat"], ["the", "cat"]) == 1  # case-sensitive
    assert M.word_edit_distance(["kitten"], ["sitting"]) == 1
    assert M.word_edit_distance("a b c d e f".split(), "a x c d f g h".split()) == 4  # 1 sub, 1 del, 2 ins
    assert M.word_edit_distance([], []) == 0
    assert isinstance(M.word_edit_distance(["a"], ["b"]), int)


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
