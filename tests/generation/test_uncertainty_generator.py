"""UncertaintySequenceGenerator: fairseq's beam search untouched, plus re-scored uncertainties."""
from argparse import Namespace

import pytest
import torch

from fairseq import checkpoint_utils, tasks
from fairseq.sequence_generator import SequenceGenerator

from fairseq_helpers import build_cfg
from proxy_end2.generation.uncertainty_sequence_generator import UncertaintySequenceGenerator
from proxy_end2.uncertainty.sequence import (
    ENSEMBLE_SEQUENCE_KEYS,
    ENSEMBLE_TOKEN_KEYS,
    PRIOR_NETWORK_SEQUENCE_KEYS,
    PRIOR_NETWORK_TOKEN_KEYS,
)


@pytest.fixture(scope="module")
def task(tiny_data):
    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny"])
    task = tasks.setup_task(cfg.task)
    task.load_dataset("test")
    return task


@pytest.fixture(scope="module")
def sample(task):
    itr = task.get_batch_iterator(task.dataset("test"), max_sentences=6, required_batch_size_multiple=1)
    return next(itr.next_epoch_itr(shuffle=False))


@pytest.fixture(scope="module")
def teachers(task, quick_teachers):
    models, _ = checkpoint_utils.load_model_ensemble([str(p) for p in quick_teachers], task=task)
    return [m.eval() for m in models]


@pytest.fixture(scope="module")
def student(task, tiny_data):
    torch.manual_seed(0)
    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny"])
    return task.build_model(cfg.model).eval()


def _gen_args(**kw):
    args = dict(beam=4, nbest=3, max_len_a=0, max_len_b=12, min_len=1, unnormalized=False, lenpen=1.0,
                unkpen=0.0, temperature=1.0, match_source_len=False, no_repeat_ngram_size=0)
    args.update(kw)
    return Namespace(**args)


@pytest.mark.parametrize("which", ["student", "teachers", "one_teacher"])
def test_same_hypotheses_and_scores_as_stock_beam_search(task, sample, request, which):
    models = {"student": lambda: [request.getfixturevalue("student")],
              "teachers": lambda: request.getfixturevalue("teachers"),
              "one_teacher": lambda: request.getfixturevalue("teachers")[:1]}[which]()
    ours = task.build_generator(models, _gen_args())
    assert isinstance(ours, UncertaintySequenceGenerator)
    stock = task.build_generator(models, _gen_args(), seq_gen_cls=SequenceGenerator)
    assert type(stock) is SequenceGenerator
    got = ours.generate(models, sample)
    want = stock.generate(models, sample)
    for hyps_got, hyps_want in zip(got, want):
        assert len(hyps_got) == len(hyps_want)
        for g, w in zip(hyps_got, hyps_want):
            assert torch.equal(g["tokens"], w["tokens"])
            assert torch.equal(g["score"], w["score"])
            assert torch.equal(g["positional_scores"], w["positional_scores"])
    # uncertainty attached to exactly the top-nbest hypotheses
    for hyps in got:
        assert all("uncertainty" in h for h in hyps[:3]) and not any("uncertainty" in h for h in hyps[3:])


@pytest.mark.parametrize("which", ["student", "teachers"])
def test_rescored_log_prob_equals_beam_search_scores(task, sample, request, which):
    """The teacher-forced pass reproduces the beam's own per-token log-probs (natural log)."""
    models = [request.getfixturevalue("student")] if which == "student" else request.getfixturevalue("teachers")
    gen = task.build_generator(models, _gen_args())
    for hyps in gen.generate(models, sample):
        for hypo in hyps[:3]:
            unc = hypo["uncertainty"]
            length = hypo["tokens"].numel()
            assert len(unc["token"]["token_nll"]) == length  # EOS included
            torch.testing.assert_close(-unc["token"]["token_nll"], hypo["positional_scores"].float(),
                                       rtol=1e-4, atol=1e-4)
            assert unc["sequence"]["log_prob"] == pytest.approx(hypo["positional_scores"].sum().item(), abs=1e-3)
            # lenpen 1: fairseq's score is the per-token mean
            assert unc["sequence"]["score"] == pytest.approx(-hypo["score"].item(), abs=1e-4)


def test_kinds_and_keys(task, sample, student, teachers):
    gen = task.build_generator([student], _gen_args())
    assert gen.kind == "prior_network"
    unc = gen.generate([student], sample)[0][0]["uncertainty"]
    assert tuple(unc["sequence"]) == PRIOR_NETWORK_SEQUENCE_KEYS and tuple(unc["token"]) == PRIOR_NETWORK_TOKEN_KEYS
    gen = task.build_generator(teachers, _gen_args())
    assert gen.kind == "ensemble" and gen.num_members == 2
    unc = gen.generate(teachers, sample)[0][0]["uncertainty"]
    assert tuple(unc["sequence"]) == ENSEMBLE_SEQUENCE_KEYS and tuple(unc["token"]) == ENSEMBLE_TOKEN_KEYS


def test_ensemble_of_identical_models_has_no_knowledge_uncertainty(task, sample, teachers):
    models = [teachers[0], teachers[0]]
    gen = task.build_generator(models, _gen_args())
    for hyps in gen.generate(models, sample):
        for hypo in hyps[:3]:
            seq = hypo["uncertainty"]["sequence"]
            for key in ("mutual_information", "epkl", "mkl", "ep_mutual_information", "ep_epkl", "ep_mkl",
                        "authors_ep_mutual_information", "authors_ep_epkl", "authors_ep_mkl",
                        "pe_knowledge", "ep_knowledge"):
                assert abs(seq[key]) < 1e-5, (key, seq[key])


def test_single_member_pe_equals_ep(task, sample, teachers):
    models = teachers[:1]
    gen = task.build_generator(models, _gen_args())
    for hyps in gen.generate(models, sample):
        unc = hyps[0]["uncertainty"]
        seq, tok = unc["sequence"], unc["token"]
        assert seq["score"] == pytest.approx(seq["ep_total"], abs=1e-6)
        assert seq["entropy_of_expected"] == pytest.approx(seq["ep_entropy_of_expected"], abs=1e-5)
        torch.testing.assert_close(tok["token_nll"], tok["token_ep_nll"], rtol=0, atol=1e-5)


def test_empty_hypothesis_and_chunking(task, sample, teachers, student):
    """A hypothesis that is only EOS gets one value per measure; tiny chunks give the same numbers."""
    for models in ([student], teachers):
        gen = task.build_generator(models, _gen_args())
        finalized = gen._generate(sample)
        eos_only = dict(finalized[0][0])
        eos_only["tokens"] = torch.tensor([task.target_dictionary.eos()])
        finalized[0][0] = eos_only
        gen.attach_uncertainty(sample, finalized)
        assert all(len(v) == 1 for v in eos_only["uncertainty"]["token"].values())
        small = task.build_generator(models, _gen_args())
        small.rescorer.memory_mb = 1e-6  # one hypothesis per re-scoring pass
        again = [[dict(h) for h in hyps] for hyps in finalized]
        small.attach_uncertainty(sample, again)
        for hyps_a, hyps_b in zip(finalized, again):
            for a, b in zip(hyps_a[:3], hyps_b[:3]):
                for key, value in a["uncertainty"]["sequence"].items():
                    assert b["uncertainty"]["sequence"][key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_plain_generation_options(task, teachers, tiny_data):
    """--no-uncertainty, --score-reference and --eval-bleu's generator stay stock."""
    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                "--no-uncertainty"])
    plain_task = tasks.setup_task(cfg.task)
    assert type(plain_task.build_generator(teachers, _gen_args())) is SequenceGenerator
    from fairseq.sequence_scorer import SequenceScorer

    assert isinstance(task.build_generator(teachers, _gen_args(score_reference=True)), SequenceScorer)
    # --eval-bleu: fairseq-train's validation generator is built inside build_model and stays plain
    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                "--eval-bleu"])
    bleu_task = tasks.setup_task(cfg.task)
    bleu_task.build_model(cfg.model)
    assert type(bleu_task.sequence_generator) is SequenceGenerator
    assert bleu_task.uncertainty_writer is None


def test_written_lines_follow_the_documented_format(task, sample, teachers, tmp_path):
    from proxy_end2.generation.output import SEQUENCE_HEADER, UncertaintyWriter

    gen = task.build_generator(teachers, _gen_args())
    task.close_uncertainty_output()
    task.uncertainty_writer = UncertaintyWriter(str(tmp_path / "uncertainty.txt"))
    hypos = task.inference_step(gen, teachers, sample)  # writes through the task's writer
    task.close_uncertainty_output()
    lines = (tmp_path / "uncertainty.txt").read_text().splitlines()
    assert lines[0].startswith(SEQUENCE_HEADER + "\tkind=ensemble\tmembers=2\t")
    assert lines[0].split("\t")[3:] == list(ENSEMBLE_SEQUENCE_KEYS)
    assert lines[1].split("\t")[3:] == list(ENSEMBLE_TOKEN_KEYS)
    su = [line.split("\t") for line in lines if line.startswith("SU-")]
    assert len(su) == sum(min(3, len(h)) for h in hypos)
    ids = sample["id"].tolist()
    first = su[0]
    assert first[0] == f"SU-{ids[0]}" and first[1] == "0"
    assert int(first[2]) == hypos[0][0]["tokens"].numel()
    assert float(first[3]) == pytest.approx(hypos[0][0]["uncertainty"]["sequence"]["log_prob"], rel=1e-5)
    tu = [line.split("\t") for line in lines if line.startswith("TU-")]
    assert len(tu) == len(su) * len(ENSEMBLE_TOKEN_KEYS)
    assert all(len(t[3].split()) == int(s[2]) for s, t in zip(su, tu[:: len(ENSEMBLE_TOKEN_KEYS)]))


def test_temperature_leaves_the_prior_network_dirichlet_alone(task, sample, student):
    """--temperature changes the decoded distribution (and so the hypotheses and their NLL), never the
    Dirichlet: re-scoring the same hypotheses at T = 1 and T = 2 gives the same Dirichlet measures."""
    hyps = task.build_generator([student], _gen_args()).generate([student], sample)
    hot = task.build_generator([student], _gen_args(temperature=2.0))
    again = [[dict(h) for h in sentence] for sentence in hyps]
    hot.attach_uncertainty(sample, again)
    for cold_sentence, hot_sentence in zip(hyps, again):
        cold, warm = cold_sentence[0]["uncertainty"], hot_sentence[0]["uncertainty"]
        for key in ("mutual_information", "epkl", "mkl", "expected_entropy", "knowledge_score"):
            torch.testing.assert_close(cold["token"][key], warm["token"][key], rtol=0, atol=0, msg=key)
        assert not torch.equal(cold["token"]["token_nll"], warm["token"]["token_nll"])
