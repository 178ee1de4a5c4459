"""Losses, gradients and uncertainty measures at the extremes a long half-precision run meets, at K = 40,000:
fp16 / bf16 / fp32 student logits, logits beyond +-80 (``exp`` overflows float32 at 88.7), one-hot teachers
(every other class 10^4 nats below; members agreeing or not), identical teachers (MKL = 0 exactly) and fp16
teacher logits at +-6e4.

test_losses.py already covers fp32/bf16 students against confident and identical teachers with moderate
logits; this file adds fp16, |z| > 80 and one-hot teachers, and the uncertainty measures.

The rule checked for the gradients: the Proxy-Dirichlet and KL gradients are bounded by construction, so
always finite. EnD^2's gradient is ``e^z_k (psi(alpha_k) - psi(alpha_0) - mean ln p_k)``, about
``e^z |ln p|``: where that true value (computed in float64) exceeds the largest number of the logits' dtype,
the returned gradient is +-inf (fp16 training: fairseq's loss scaler lowers the scale; fp32: fairseq stops
with "gradients are Nan/Inf"); everywhere else it is finite and equals the float64 gradient rounded to the
dtype. The loss values (float64; float32 for the KL of half logits) are always finite.
"""
from __future__ import annotations

import math

import pytest
import torch

from proxy_end2.losses import dirichlet_nll_loss_from_stats, ensemble_kl_loss_from_stats, proxy_dirichlet_loss_from_stats
from proxy_end2.uncertainty import (
    dirichlet_concentrations,
    dirichlet_uncertainty,
    ensemble_sequence_uncertainty,
    ensemble_statistics,
    ensemble_uncertainty,
    prior_network_sequence_uncertainty,
    proxy_target_precision,
)

K = 40_000
EPS = 2.0**-23
HALF_AND_FULL = [torch.float16, torch.bfloat16, torch.float32]


def _teachers(kind: str) -> torch.Tensor:
    """Teacher logits [2, 3, K] (2 positions, 3 members)."""
    if kind == "identical":  # random, identical members: MKL = 0 up to the float32 floor of the statistics
        base = torch.randn(2, 1, K, generator=torch.Generator().manual_seed(1)) * 3
        return base.expand(2, 3, K).contiguous()
    if kind == "fp16_one_hot_agreeing":  # fp16 logits at +-6e4: softmax is exactly one-hot
        t = torch.full((2, 3, K), -6e4, dtype=torch.float16)
        t[:, :, 7] = 6e4
        return t
    t = torch.full((2, 3, K), -1e4)
    t[:, :, 7] = 0.0
    if kind == "one_hot_disagreeing":  # member 2 is certain of another class
        t[:, 1, 7], t[:, 1, 9] = -1e4, 0.0
    return t  # "one_hot_agreeing": every member certain of class 7


def _students(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Student logits [2, K]: moderate, and beyond +-80 (float32's exp overflows at 88.7; fp16 holds 65504)."""
    moderate = torch.randn(2, K, generator=torch.Generator().manual_seed(2)) * 2
    beyond = moderate.clone()
    beyond[0, :100], beyond[0, 100:200], beyond[0, 7] = 85.0, -85.0, 200.0
    beyond[1, :] = -90.0
    beyond[1, 9] = 300.0
    return {"moderate": moderate.to(dtype), "beyond_80": beyond.to(dtype)}


def _value_and_grad(loss_fn, z: torch.Tensor, stats):
    z = z.detach().clone().requires_grad_()
    loss = loss_fn(z, stats)
    loss.sum().backward()
    return loss.detach(), z.grad


TEACHERS = ["one_hot_agreeing", "one_hot_disagreeing", "identical", "fp16_one_hot_agreeing"]
_STATS = {}


def _stats(kind: str):
    """The teachers' statistics (fp32), computed once per kind."""
    if kind not in _STATS:
        _STATS[kind] = ensemble_statistics(_teachers(kind))
    return _STATS[kind]


@pytest.mark.parametrize("teacher_kind", TEACHERS)
@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=str)
def test_losses_and_gradients_stay_finite(teacher_kind, dtype):
    stats = _stats(teacher_kind)
    for student_kind, z in _students(dtype).items():
        for loss_fn in (proxy_dirichlet_loss_from_stats, ensemble_kl_loss_from_stats, dirichlet_nll_loss_from_stats):
            loss, grad = _value_and_grad(loss_fn, z, stats)
            where = (teacher_kind, str(dtype), student_kind, loss_fn.__name__)
            assert loss.dtype in (torch.float32, torch.float64) and torch.isfinite(loss).all(), where
            assert grad.dtype == dtype, where
            if loss_fn is not dirichlet_nll_loss_from_stats:
                assert torch.isfinite(grad).all(), where
                continue
            # EnD^2: finite exactly where the float64 gradient of the same logits, rounded as the loss rounds it
            # (to float32, then to the logits' dtype), fits the dtype
            _, grad64 = _value_and_grad(loss_fn, z.double(), stats)
            rounded = grad64.float().to(dtype)
            fits = torch.isfinite(rounded)
            torch.testing.assert_close(grad[fits], rounded[fits], rtol=0, atol=0, msg=str(where))
            assert torch.isinf(grad[~fits]).all(), where


def test_the_end2_rule_is_not_vacuous():
    """Both sides of the EnD^2 rule occur: one-hot teachers and logits beyond 80 give gradients beyond the float32
    range (about e^85 * 10^4), moderate logits against the same teachers do not."""
    stats = _stats("one_hot_agreeing")
    students = _students(torch.float32)
    _, beyond = _value_and_grad(dirichlet_nll_loss_from_stats, students["beyond_80"].double(), stats)
    _, moderate = _value_and_grad(dirichlet_nll_loss_from_stats, students["moderate"].double(), stats)
    assert (beyond.abs() > torch.finfo(torch.float32).max).any()
    assert (moderate.abs() < 1e9).all()


@pytest.mark.parametrize("teacher_kind", TEACHERS)
def test_teacher_statistics_and_proxy_precision_stay_finite(teacher_kind):
    teachers = _teachers(teacher_kind)
    stats = _stats(teacher_kind)
    precision = proxy_target_precision(stats)  # B = (K - 1) / (2 MKL + eps) + K
    assert torch.isfinite(stats.log_mean_probs).all() and torch.isfinite(stats.mean_log_probs).all()
    assert torch.isfinite(precision).all() and (precision >= K).all()
    measures = ensemble_uncertainty(teachers.float().log_softmax(-1))
    assert all(torch.isfinite(v).all() for v in measures.values()), measures
    if teacher_kind.endswith("one_hot_agreeing"):
        # exactly one-hot and agreeing: no knowledge uncertainty at all, the precision at its cap (K - 1) / eps
        assert (stats.mkl() == 0).all() and (measures["mutual_information"] == 0).all()
        torch.testing.assert_close(precision, torch.full_like(precision, (K - 1) / EPS + K), rtol=1e-12, atol=0)
    if teacher_kind == "one_hot_disagreeing":  # MKL = ln 3 + (2/3) 10^4 / ... : large, so B is near K
        assert (stats.mkl() > 1e3).all() and (precision < K + 10).all()


@pytest.mark.parametrize("dtype", HALF_AND_FULL, ids=str)
def test_prior_network_uncertainty_stays_finite(dtype):
    """Closed-form Dirichlet measures and the token/sequence measures of generation, |z| > 80 included."""
    for student_kind, z in _students(dtype).items():
        measures = dirichlet_uncertainty(dirichlet_concentrations(z))
        assert all(torch.isfinite(v).all() for v in measures.values()), (student_kind, measures)
        assert all((v >= 0).all() for name, v in measures.items() if name != "expected_entropy")
        logits = z.unsqueeze(0)  # one hypothesis of two positions [1, 2, K]
        target = torch.tensor([[7, 9]])
        token, sequence = prior_network_sequence_uncertainty(logits, target, torch.ones(1, 2, dtype=torch.bool))
        bad = [name for name, v in {**token, **sequence}.items() if not torch.isfinite(v).all()]
        assert not bad, (student_kind, dtype, bad)


@pytest.mark.parametrize("teacher_kind", TEACHERS)
def test_ensemble_sequence_uncertainty_stays_finite(teacher_kind):
    """The pe/ep token and sequence measures of an ensemble of (one-hot, identical) teachers, on the class they
    are sure of and on one they rule out (log-probability -1e4: ep weights of wildly different members)."""
    member_logits = _teachers(teacher_kind).float().unsqueeze(0)  # [1, 2, 3, K]: N=1, L=2, M=3
    token, sequence = ensemble_sequence_uncertainty(member_logits, torch.tensor([[7, 9]]),
                                                    torch.ones(1, 2, dtype=torch.bool))
    bad = [name for name, v in {**token, **sequence}.items() if not torch.isfinite(v).all()]
    assert not bad, (teacher_kind, bad)
    assert math.isfinite(float(sequence["log_prob"][0]))
