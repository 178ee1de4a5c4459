"""The three distillation criteria on hand-made probabilities, with a fake model (fairseq's test technique)."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fairseq.data import Dictionary
from fairseq.logging import metrics

from proxy_end2.criterions.dirichlet_nll_distillation import DirichletNLLDistillationCriterion
from proxy_end2.criterions.ensemble_kl_distillation import EnsembleKLDistillationCriterion
from proxy_end2.criterions.forward_proxy_dirichlet_distillation import ForwardProxyDirichletDistillationCriterion
from proxy_end2.criterions.proxy_dirichlet_distillation import ProxyDirichletDistillationCriterion
from proxy_end2.losses import dirichlet_nll_loss, ensemble_kl_loss, forward_proxy_dirichlet_loss, proxy_dirichlet_loss
from proxy_end2.constants import TEACHER_STATS_KEY
from proxy_end2.uncertainty import ensemble_statistics


def _dictionary():
    d = Dictionary()  # <s>=0 <pad>=1 </s>=2 <unk>=3
    for w in ("w1", "w2", "w3"):
        d.add_symbol(w)
    return d


DICT = _dictionary()
PAD = DICT.pad()
TASK = SimpleNamespace(target_dictionary=DICT)
K = len(DICT)  # 7

# Two teachers, two sentences of length 3 (the second padded after 2 tokens), hand-written probabilities.
#                  <s>   <pad>  </s>  <unk>  w1     w2     w3
TEACHER_PROBS = torch.tensor([
    [  # teacher 1
        [[0.01, 0.01, 0.02, 0.01, 0.80, 0.10, 0.05],
         [0.01, 0.01, 0.02, 0.01, 0.05, 0.85, 0.05],
         [0.01, 0.01, 0.90, 0.01, 0.03, 0.02, 0.02]],
        [[0.01, 0.01, 0.02, 0.01, 0.30, 0.30, 0.35],
         [0.01, 0.01, 0.80, 0.01, 0.05, 0.06, 0.06],
         [1/7] * 7],                                        # padding position
    ],
    [  # teacher 2
        [[0.01, 0.01, 0.02, 0.01, 0.70, 0.20, 0.05],
         [0.01, 0.01, 0.02, 0.01, 0.10, 0.80, 0.05],
         [0.01, 0.01, 0.85, 0.01, 0.05, 0.05, 0.02]],
        [[0.01, 0.01, 0.02, 0.01, 0.05, 0.85, 0.05],
         [0.01, 0.01, 0.60, 0.01, 0.10, 0.17, 0.10],
         [0.50, 0.10, 0.10, 0.10, 0.10, 0.05, 0.05]],     # padding position: must not matter
    ],
], dtype=torch.float64)  # M x B x T x K
TARGET = torch.tensor([[4, 5, 2], [6, 2, PAD]])
STUDENT_LOGITS = torch.tensor([
    [[-3.0, -3.0, -2.0, -3.0, 2.0, 0.5, 0.1],
     [-3.0, -3.0, -2.0, -3.0, 0.2, 2.5, 0.1],
     [-3.0, -3.0, 3.0, -3.0, 0.0, -0.5, 0.1]],
    [[-3.0, -3.0, -2.0, -3.0, 0.3, 1.0, 0.9],
     [-3.0, -3.0, 2.0, -3.0, 0.2, 0.1, -0.4],
     [9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]],                 # padding position
], dtype=torch.float64)


class FixedLogitsModel(nn.Module):
    """Returns the same (trainable) logits whatever the input; targets come from the sample."""

    def __init__(self, logits, model_offset=1.0):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.model_offset = model_offset

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        return self.logits, {}

    def get_targets(self, sample, net_output):
        return sample["target"]


def _teacher_logits():
    return TEACHER_PROBS.log().permute(1, 2, 0, 3)  # B x T x M x K


def _sample(rows=slice(None)):
    target = TARGET[rows]
    logits = _teacher_logits()[rows]
    return {
        "net_input": {"src_tokens": torch.zeros(target.size(0), 2, dtype=torch.long),
                      "src_lengths": torch.full((target.size(0),), 2),
                      "prev_output_tokens": target.clone()},
        "target": target,
        "ntokens": int(target.ne(PAD).sum()),
        TEACHER_STATS_KEY: ensemble_statistics(logits, dtype=torch.float64),
    }


CRITERIA = {
    "ensemble_kl_distillation": (EnsembleKLDistillationCriterion, {}, lambda z, t, c: ensemble_kl_loss(z, t)),
    "dirichlet_nll_distillation": (DirichletNLLDistillationCriterion, {},
                                   lambda z, t, c: dirichlet_nll_loss(z, t, model_offset=c)),
    "proxy_dirichlet_distillation": (
        ProxyDirichletDistillationCriterion, {"target_concentration": "mkl", "target_offset": 1.0},
        lambda z, t, c: proxy_dirichlet_loss(z, t, model_offset=c, target_offset=1.0, precision="mkl")),
    "forward_proxy_dirichlet_distillation": (
        ForwardProxyDirichletDistillationCriterion, {"target_concentration": "epkl", "target_offset": 0.5},
        lambda z, t, c: forward_proxy_dirichlet_loss(z, t, model_offset=c, target_offset=0.5, precision="epkl")),
}


def _criterion(name):
    cls, kwargs, _ = CRITERIA[name]
    return cls(TASK, sentence_avg=False, **kwargs)


def test_ensemble_kl_by_hand():
    """KL(pbar || softmax z) computed with plain Python loops from the table above."""
    loss, sample_size, log = _criterion("ensemble_kl_distillation")(FixedLogitsModel(STUDENT_LOGITS), _sample())
    expected = 0.0
    for b in range(2):
        for t in range(3):
            if TARGET[b, t] == PAD:
                continue
            pbar = [(TEACHER_PROBS[0, b, t, k] + TEACHER_PROBS[1, b, t, k]).item() / 2 for k in range(K)]
            norm = sum(math.exp(z) for z in STUDENT_LOGITS[b, t].tolist())
            q = [math.exp(z) / norm for z in STUDENT_LOGITS[b, t].tolist()]
            expected += sum(p * (math.log(p) - math.log(qq)) for p, qq in zip(pbar, q))
    assert sample_size == 5 and log["ntokens"] == 5 and log["nsentences"] == 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", sorted(CRITERIA))
@pytest.mark.parametrize("offset", [1.0, 0.5])
def test_criterion_equals_pure_loss_at_non_pad_positions(name, offset):
    _, _, pure = CRITERIA[name]
    loss, _, _ = _criterion(name)(FixedLogitsModel(STUDENT_LOGITS, offset), _sample())
    per_position = pure(STUDENT_LOGITS, _teacher_logits(), offset)  # B x T
    expected = per_position[TARGET.ne(PAD)].sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_reduce_false_sums_to_reduce_true_and_zero_at_padding(name):
    crit = _criterion(name)
    loss, _, _ = crit(FixedLogitsModel(STUDENT_LOGITS), _sample())
    unreduced, _, _ = crit(FixedLogitsModel(STUDENT_LOGITS), _sample(), reduce=False)
    assert unreduced.shape == TARGET.shape
    assert unreduced[1, 2].item() == 0.0
    assert unreduced.sum().item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_padding_ignored_batch_equals_sum_of_singletons(name):
    crit = _criterion(name)
    batch_loss, _, batch_log = crit(FixedLogitsModel(STUDENT_LOGITS), _sample())
    singles = [crit(FixedLogitsModel(STUDENT_LOGITS[i : i + 1, : (3 if i == 0 else 2)]),
                    _sample_single(i)) for i in range(2)]
    assert batch_loss.item() == pytest.approx(sum(s[0].item() for s in singles), rel=1e-9)
    for key in ("nll_loss", "ensemble_mkl", "student_alpha0", "ensemble_precision"):
        assert float(batch_log[key]) == pytest.approx(sum(float(s[2][key]) for s in singles), rel=1e-9)


def _sample_single(i):
    length = 3 if i == 0 else 2
    target = TARGET[i : i + 1, :length]
    return {
        "net_input": {"src_tokens": torch.zeros(1, 2, dtype=torch.long), "src_lengths": torch.tensor([2]),
                      "prev_output_tokens": target.clone()},
        "target": target, "ntokens": length,
        TEACHER_STATS_KEY: ensemble_statistics(_teacher_logits()[i : i + 1, :length], dtype=torch.float64),
    }


def test_logged_statistics_by_hand():
    crit = _criterion("proxy_dirichlet_distillation")
    _, _, log = crit(FixedLogitsModel(STUDENT_LOGITS), _sample())
    mask = TARGET.ne(PAD)
    lprobs = torch.log_softmax(STUDENT_LOGITS, -1)
    nll = -lprobs.gather(-1, TARGET.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].sum()
    pbar = TEACHER_PROBS.mean(0)
    mkl = (pbar * (pbar.log() - TEACHER_PROBS.log().mean(0))).sum(-1)[mask]
    beta_hat = (K - 1) / (2 * mkl + 2**-23)
    alpha0 = (STUDENT_LOGITS.exp() + 1.0).sum(-1)[mask]
    assert float(log["nll_loss"]) == pytest.approx(nll.item(), rel=1e-9)
    assert float(log["ensemble_mkl"]) == pytest.approx(mkl.sum().item(), rel=1e-6)
    assert float(log["ensemble_precision"]) == pytest.approx(beta_hat.sum().item(), rel=1e-6)
    assert float(log["target_precision"]) == pytest.approx((beta_hat + K).sum().item(), rel=1e-6)
    assert float(log["student_alpha0"]) == pytest.approx(alpha0.sum().item(), rel=1e-9)

    with metrics.aggregate() as agg:
        crit.__class__.reduce_metrics([log, log])
    values = agg.get_smoothed_values()
    assert values["nll_loss"] == pytest.approx(nll.item() / 5 / math.log(2), abs=1e-3)
    assert values["ppl"] == pytest.approx(2 ** values["nll_loss"], rel=1e-2)
    assert values["ensemble_mkl"] == pytest.approx(mkl.mean().item(), abs=1e-4)
    assert values["loss"] == pytest.approx(float(log["loss"]) / 5, abs=1e-4)


def test_gradient_flows_to_student_only_at_non_pad_positions():
    model = FixedLogitsModel(STUDENT_LOGITS)
    loss, _, _ = _criterion("proxy_dirichlet_distillation")(model, _sample())
    loss.backward()
    assert torch.isfinite(model.logits.grad).all()
    assert model.logits.grad[1, 2].abs().max() == 0
    assert model.logits.grad[0].abs().max() > 0


def test_missing_teacher_statistics_is_a_clear_error():
    sample = _sample()
    del sample[TEACHER_STATS_KEY]
    with pytest.raises(ValueError, match="--teacher-paths"):
        _criterion("proxy_dirichlet_distillation")(FixedLogitsModel(STUDENT_LOGITS), sample)


def test_vocabulary_mismatch_is_a_clear_error():
    sample = _sample()
    sample[TEACHER_STATS_KEY] = ensemble_statistics(_teacher_logits()[..., :-1])
    with pytest.raises(ValueError, match="dictionary"):
        _criterion("ensemble_kl_distillation")(FixedLogitsModel(STUDENT_LOGITS), sample)


def test_non_finite_loss_names_the_problem():
    logits = STUDENT_LOGITS.clone()
    logits[0, 0, 4] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        _criterion("dirichlet_nll_distillation")(FixedLogitsModel(logits), _sample())


@pytest.mark.parametrize("cls", [ProxyDirichletDistillationCriterion, ForwardProxyDirichletDistillationCriterion])
def test_bad_target_offset_rejected(cls):
    with pytest.raises(ValueError, match="target-offset"):
        cls(TASK, sentence_avg=False, target_offset=-1.0)


def test_forward_proxy_criterion_logs_its_target_precision_and_has_the_reverse_optimum():
    """The forward criterion logs the same target precision B as the reverse one (same options) and, with the
    student at alpha = B pbar + 1, both have zero gradient there."""
    from proxy_end2.uncertainty import proxy_target_precision

    stats = _sample()[TEACHER_STATS_KEY]
    b = proxy_target_precision(stats, "mkl", 1.0)
    z_star = torch.log(b.unsqueeze(-1) * stats.mean_probs())  # model offset 1: alpha = B pbar + 1
    logs, grads = [], []
    for cls in (ProxyDirichletDistillationCriterion, ForwardProxyDirichletDistillationCriterion):
        model = FixedLogitsModel(z_star)
        loss, _, log = cls(TASK, sentence_avg=False, target_concentration="mkl", target_offset=1.0)(model, _sample())
        loss.backward()
        logs.append(float(log["target_precision"]))
        grads.append(model.logits.grad[TARGET.ne(PAD)].abs().max().item())
    assert logs[0] == pytest.approx(logs[1], rel=1e-12)
    assert logs[0] == pytest.approx(b[TARGET.ne(PAD)].sum().item(), rel=1e-9)
    assert max(grads) < 1e-6


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_batch_without_padding_takes_the_view_path(name):
    """Sentence 0 has no padding: the criterion uses views (no logits[mask] / select copies); same loss,
    same per-token reduce=False values and the same logged statistics as through the masked path."""
    crit = _criterion(name)
    sample = _sample_single(0)
    logits = STUDENT_LOGITS[:1, :3]
    loss, _, log = crit(FixedLogitsModel(logits), sample)
    unreduced, _, _ = crit(FixedLogitsModel(logits), sample, reduce=False)
    want = CRITERIA[name][2](logits, _teacher_logits()[:1, :3], 1.0)  # 1 x 3
    assert loss.item() == pytest.approx(want.sum().item(), rel=1e-12)
    assert unreduced.shape == (1, 3)
    torch.testing.assert_close(unreduced.detach(), want, rtol=1e-12, atol=0)
    _, _, padded_log = crit(FixedLogitsModel(STUDENT_LOGITS), _sample())  # sentence 0 is part of this batch
    assert log["ntokens"] == 3
    stats = sample[TEACHER_STATS_KEY]
    selected = stats.select(torch.ones(1, 3, dtype=torch.bool))
    assert selected.log_mean_probs.data_ptr() == stats.log_mean_probs.data_ptr()
    assert float(log["ensemble_mkl"]) == pytest.approx(stats.mkl().sum().item(), rel=1e-12)
    assert float(padded_log["ensemble_mkl"]) > float(log["ensemble_mkl"])  # sentence 1 adds its tokens


def test_proxy_criterion_computes_the_teacher_mkl_once_per_step(monkeypatch):
    """token_losses (target precision), ensemble_mkl, ensemble_precision and target_precision all use the MKL:
    one evaluation per step, with or without padding."""
    import proxy_end2.uncertainty.ensemble as ensemble

    calls = []
    real = ensemble._mkl_terms
    monkeypatch.setattr(ensemble, "_mkl_terms", lambda *a: calls.append(1) or real(*a))
    crit = _criterion("proxy_dirichlet_distillation")
    crit(FixedLogitsModel(STUDENT_LOGITS), _sample())
    assert len(calls) == 1
    crit(FixedLogitsModel(STUDENT_LOGITS[:1, :3]), _sample_single(0))
    assert len(calls) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_logged_nll_and_alpha0_of_low_precision_logits(dtype):
    """Half/float32 student logits: the logged NLL and alpha_0 are those of the (exactly upcast) logits,
    computed in float64."""
    crit = _criterion("proxy_dirichlet_distillation")
    logits = STUDENT_LOGITS.to(dtype)
    _, _, log = crit(FixedLogitsModel(logits), _sample())
    mask = TARGET.ne(PAD)
    z = logits.double()
    nll = -torch.log_softmax(z, -1).gather(-1, TARGET.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].sum()
    alpha0 = (z.exp() + 1.0).sum(-1)[mask].sum()
    assert float(log["nll_loss"]) == pytest.approx(nll.item(), rel=1e-12)
    assert float(log["student_alpha0"]) == pytest.approx(alpha0.item(), rel=1e-12)
