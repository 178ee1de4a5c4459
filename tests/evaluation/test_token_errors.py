"""Token-level error detection: piece/word grouping, LCS alignment labels against a brute-force dynamic
programme, the EOS convention, sklearn's AUCs, and the report / CLI wiring on fake speech outputs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from proxy_end2.evaluation import read_generate_output
from proxy_end2.evaluation.cli import main
from proxy_end2.evaluation.report import evaluate
from proxy_end2.evaluation.token_errors import (
    collect_token_errors,
    hypothesis_error_labels,
    piece_error_labels,
    token_error_detection,
    word_ids_of_pieces,
    words_of_pieces,
)

W = "\u2581"
WORDS = "the cat sat on a mat dog ran far away big red".split()


def _lcs_length(a: List[str], b: List[str]) -> int:
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i, j] = table[i - 1, j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1, j], table[i, j - 1])
    return int(table[-1, -1])


def _is_subsequence(sub: List[str], seq: List[str]) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


def test_pieces_group_into_words():
    pieces = [f"{W}the", f"{W}ca", "t", f"{W}s", "at", f"{W}", "on"]
    assert word_ids_of_pieces(pieces) == [0, 1, 1, 2, 2, 3, 3]
    assert words_of_pieces(pieces) == ["the", "cat", "sat", "on"]
    assert words_of_pieces(pieces) == "".join(pieces).replace(W, " ").split()  # sentencepiece's decoding
    assert word_ids_of_pieces(["ca", f"{W}t"]) == [0, 1]  # a first piece without the marker still starts a word
    assert words_of_pieces(["the", "ca@@", "t", "sa@@", "t@@", "s"]) == ["the", "cat", "sats"]
    assert word_ids_of_pieces(["the", "cat"]) == [0, 1] and word_ids_of_pieces([]) == []


def test_labels_match_a_longest_common_subsequence():
    rng = np.random.default_rng(0)
    for _ in range(300):
        ref = list(rng.choice(WORDS[:5], size=int(rng.integers(0, 9))))
        hyp = list(rng.choice(WORDS[:5], size=int(rng.integers(0, 9))))
        labels = hypothesis_error_labels(hyp, ref)
        assert labels.shape == (len(hyp),) and set(labels.tolist()) <= {0, 1}
        correct = [h for h, lab in zip(hyp, labels) if lab == 0]
        assert len(correct) == _lcs_length(ref, hyp)  # the most matches any alignment can have
        assert _is_subsequence(correct, ref)


def test_labels_of_known_alignments():
    assert hypothesis_error_labels("b c".split(), "a b".split()).tolist() == [0, 1]  # delete a, keep b, insert c
    assert hypothesis_error_labels("the cat sat".split(), "the cat sat".split()).tolist() == [0, 0, 0]
    assert hypothesis_error_labels("the big cat".split(), "the cat".split()).tolist() == [0, 1, 0]
    assert hypothesis_error_labels([], "the cat".split()).tolist() == []


def test_piece_labels_word_and_piece_units():
    pieces = [f"{W}the", f"{W}ca", "ts", f"{W}sat"]  # "the cats sat" against "the cat sat"
    assert piece_error_labels(pieces, "the cat sat", "word").tolist() == [0, 1, 1, 0]

    def encode(text):  # a stand-in for sentencepiece: "cat" is cut like the hypothesis cut it
        return [p for w in text.split() for p in ([f"{W}ca", "t"] if w == "cat" else [f"{W}{w}"])]

    assert piece_error_labels(pieces, "the cat sat", "piece", encode).tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError, match="sentencepiece model"):
        piece_error_labels(pieces, "the cat sat", "piece")
    with pytest.raises(ValueError, match="unit"):
        piece_error_labels(pieces, "x", "char")


def _speech_output(path: Path, n: int, seed: int, post_processed: bool = False, references: bool = True,
                   error_rate: float = 0.3) -> Path:
    """A fairseq-generate output of a speech model: H- in sentencepiece pieces, D-/T- in words, TU- lines of
    two measures: ``oracle`` (high on pieces of wrong words, then EOS 100) and ``noise``."""
    rng = np.random.default_rng(seed)
    lines = ["#SU-columns\tkind=prior_network\tmembers=1\tlog_prob\tscore",
             "#TU-columns\tkind=prior_network\tmembers=1\toracle\tnoise"]
    for sid in range(n):
        ref = list(rng.choice(WORDS, size=int(rng.integers(2, 7))))
        others = [w for w in WORDS if w not in ref]  # a wrong word is never in the reference: no realignment
        hyp = [w if rng.random() >= error_rate else str(rng.choice(others)) for w in ref]
        pieces = [p for w in hyp for p in ([f"{W}{w[:2]}", w[2:]] if len(w) > 2 else [f"{W}{w}"])]
        wrong = {i for i, (h, r) in enumerate(zip(hyp, ref)) if h != r}
        word_of = word_ids_of_pieces(pieces)
        oracle = [1.0 + rng.random() if word_of[k] in wrong else rng.random() for k in range(len(pieces))] + [100.0]
        h_text = " ".join(hyp) if post_processed else " ".join(pieces)
        lines += ([f"T-{sid}\t{' '.join(ref)}"] if references else []) + [
            f"H-{sid}\t-0.5\t{h_text}", f"D-{sid}\t-0.5\t{' '.join(hyp)}",
            f"SU-{sid}\t0\t{len(pieces) + 1}\t-1.0\t0.5",
            f"TU-{sid}\t0\toracle\t" + " ".join(f"{v:.6g}" for v in oracle),
            f"TU-{sid}\t0\tnoise\t" + " ".join(f"{v:.6g}" for v in rng.random(len(pieces) + 1))]
    if references:
        lines.append("Generate test with beam=5: WER: 12.34")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_collect_drops_eos_and_scores_with_sklearn(tmp_path):
    run = read_generate_output(_speech_output(tmp_path / "generate-test.txt", 40, seed=1))
    data = collect_token_errors(run)
    n_pieces = sum(len(s.hypotheses[0].tokenized.split()) for s in run.sentences)
    assert data.labels.shape == (n_pieces,) and data.values["oracle"].shape == (n_pieces,)
    assert float(data.values["oracle"].max()) < 100  # the EOS values (100) are left out
    scores = token_error_detection(data)
    assert scores["tokens"] == n_pieces and 0 < scores["errors"] < n_pieces
    assert scores["measures"]["oracle"] == {"roc_auc": 1.0, "pr_auc": 1.0}
    assert scores["measures"]["noise"]["roc_auc"] == pytest.approx(roc_auc_score(data.labels, data.values["noise"]))
    assert scores["measures"]["noise"]["pr_auc"] == pytest.approx(
        average_precision_score(data.labels, data.values["noise"]))


def test_outputs_that_cannot_be_labelled(tmp_path):
    post = read_generate_output(_speech_output(tmp_path / "generate-post.txt", 5, seed=2, post_processed=True))
    with pytest.raises(ValueError, match="without --post-process"):
        collect_token_errors(post)
    no_tu = read_generate_output(_speech_output(tmp_path / "generate-x.txt", 5, seed=2), load_token_values=False)
    with pytest.raises(ValueError, match="TU- lines"):
        collect_token_errors(no_tu)
    no_ref = read_generate_output(_speech_output(tmp_path / "generate-y.txt", 5, seed=2, references=False))
    with pytest.raises(ValueError, match="references"):
        collect_token_errors(no_ref)
    perfect = token_error_detection(collect_token_errors(read_generate_output(
        _speech_output(tmp_path / "generate-z.txt", 5, seed=5, error_rate=0.0))))
    assert perfect["errors"] == 0 and perfect["measures"]["oracle"] == {"roc_auc": None, "pr_auc": None}


def test_report_and_cli(tmp_path):
    id_path = _speech_output(tmp_path / "id" / "generate-test.txt", 30, seed=3)
    ood_path = _speech_output(tmp_path / "ood" / "generate-test.txt", 30, seed=4)
    report = evaluate(id_path, {"other": ood_path}, quality="wer", token_errors=True, plots=False)
    assert set(report["token_errors"]) == {"test", "other"}
    res = report["token_errors"]["test"]
    assert res["unit"] == "word" and res["measures"]["oracle"]["roc_auc"] == pytest.approx(100.0)
    assert res["error_rate"] == pytest.approx(100.0 * res["errors"] / res["tokens"])
    assert "longest common subsequence" in report["settings"]["token_errors"]
    assert evaluate(id_path, quality="wer", plots=False)["token_errors"] == {}  # only when asked for
    with pytest.raises(ValueError, match="sentencepiece model"):
        evaluate(id_path, quality="wer", token_errors=True, token_unit="piece")
    out = tmp_path / "report"
    assert main(["--id", f"test={id_path}", "--ood", f"other={ood_path}", "--out", str(out), "--quality", "wer",
                 "--token-errors", "--no-plots", "--quiet"]) == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["token_errors"]["other"]["measures"]["oracle"]["pr_auc"] == pytest.approx(100.0)
    assert "## Token error detection on test (ID)" in (out / "report.md").read_text()
