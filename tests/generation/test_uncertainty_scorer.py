"""UncertaintySequenceScorer: fairseq's reference scorer untouched, plus the reference's uncertainty, and
``fairseq-generate --score-reference --task translation_distillation`` writing SU-/TU- lines for it."""
import math

import pytest
import torch

from fairseq.sequence_scorer import SequenceScorer

from conftest import USER_DIR, run_fairseq
from proxy_end2.evaluation.parsing import read_generate_output
from proxy_end2.generation.uncertainty_sequence_scorer import UncertaintySequenceScorer
from proxy_end2.uncertainty.sequence import (
    ENSEMBLE_SEQUENCE_KEYS,
    ENSEMBLE_TOKEN_KEYS,
    PRIOR_NETWORK_SEQUENCE_KEYS,
    PRIOR_NETWORK_TOKEN_KEYS,
)
from test_uncertainty_generator import _gen_args, sample, student, task, teachers  # noqa: F401  (fixtures)

KEYS = {"prior_network": (PRIOR_NETWORK_SEQUENCE_KEYS, PRIOR_NETWORK_TOKEN_KEYS),
        "ensemble": (ENSEMBLE_SEQUENCE_KEYS, ENSEMBLE_TOKEN_KEYS)}


@pytest.mark.parametrize("which,kind", [("student", "prior_network"), ("teachers", "ensemble"),
                                        ("one_teacher", "ensemble")])
def test_same_scores_as_fairseq_and_uncertainty_for_every_reference(task, sample, request, which, kind):
    models = {"student": lambda: [request.getfixturevalue("student")],
              "teachers": lambda: request.getfixturevalue("teachers"),
              "one_teacher": lambda: request.getfixturevalue("teachers")[:1]}[which]()
    ours = task.build_generator(models, _gen_args(score_reference=True))
    assert isinstance(ours, UncertaintySequenceScorer) and ours.kind == kind and ours.num_members == len(models)
    got = ours.generate(models, sample)
    want = SequenceScorer(task.target_dictionary).generate(models, sample)
    assert len(got) == len(want) == sample["id"].numel()
    for (g,), (w,), target in zip(got, want, sample["target"]):
        assert torch.equal(g["tokens"], w["tokens"]) and torch.equal(g["score"], w["score"])
        assert torch.equal(g["positional_scores"], w["positional_scores"])
        assert torch.equal(g["tokens"], target[target.ne(task.target_dictionary.pad())])  # the reference
        unc = g["uncertainty"]
        assert unc["kind"] == kind and tuple(unc["sequence"]) == KEYS[kind][0] and tuple(unc["token"]) == KEYS[kind][1]
        assert len(unc["token"]["token_nll"]) == g["tokens"].numel()
        # the re-scoring pass reproduces fairseq's reference scores (natural log)
        assert unc["sequence"]["log_prob"] == pytest.approx(w["positional_scores"].sum().item(), abs=1e-4)
        assert unc["sequence"]["score"] == pytest.approx(-w["score"].item(), abs=1e-5)
        torch.testing.assert_close(-unc["token"]["token_nll"], w["positional_scores"].float(), rtol=1e-4, atol=1e-4)


def test_no_uncertainty_keeps_fairseq_scorer(tiny_data, teachers):
    from fairseq import tasks

    from fairseq_helpers import build_cfg

    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                "--no-uncertainty"])
    plain = tasks.setup_task(cfg.task)
    assert type(plain.build_generator(teachers, _gen_args(score_reference=True))) is SequenceScorer


def test_fairseq_generate_score_reference_prints_uncertainty(tiny_data, quick_teachers, tmp_path):
    """The stock CLI with --score-reference: one SU- line (rank 0) per sentence for the reference, whose log_prob
    is fairseq's own H- score (base 2, per token) times ln 2 and the length; the evaluator reads it."""
    out = tmp_path / "reference"
    run_fairseq("generate", [tiny_data, "--user-dir", USER_DIR, "--task", "translation_distillation", "-s", "src",
                             "-t", "tgt", "--path", ":".join(map(str, quick_teachers)), "--gen-subset", "test",
                             "--score-reference", "--batch-size", "16", "--results-path", out, "--cpu"],
                tmp_path / "generate.log")
    lines = (out / "uncertainty-test.txt").read_text().splitlines()
    assert lines[0].startswith("#SU-columns\tkind=ensemble\tmembers=2\t")
    su = [line.split("\t") for line in lines if line.startswith("SU-")]
    assert sorted(int(fields[0][3:]) for fields in su) == list(range(60)) and {f[1] for f in su} == {"0"}
    hypotheses = {}
    for line in (out / "generate-test.txt").read_text().splitlines():
        if line.startswith("H-"):
            key, score, _ = line.split("\t")
            hypotheses[int(key[2:])] = float(score)
    for fields in su[:10]:
        length, log_prob = int(fields[2]), float(fields[3])
        assert log_prob == pytest.approx(hypotheses[int(fields[0][3:])] * math.log(2) * length, abs=1e-3 * length)
    run = read_generate_output(out / "generate-test.txt")
    assert len(run.sentences) == 60 and all(len(s.hypotheses) == 1 for s in run.sentences)
