"""Distillation losses (proxy_end2.losses) and the proxy precision (proxy_end2.uncertainty.proxy).

Oracles: torch.distributions (Dirichlet entropy/log_prob/KL), the textbook formula with autograd,
torch.autograd.gradcheck, central finite differences, mpmath (80 digits) where float64 textbook formulas
cancel, F.kl_div, and the closed-form stationary point alpha_k = B pbar_k + 1.
"""
from __future__ import annotations

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

from proxy_end2.losses import (
    dirichlet_nll_loss,
    dirichlet_nll_loss_from_stats,
    ensemble_kl_loss,
    ensemble_kl_loss_from_stats,
    forward_proxy_dirichlet_loss,
    forward_proxy_dirichlet_loss_from_stats,
    proxy_dirichlet_loss,
    proxy_dirichlet_loss_from_stats,
    proxy_dirichlet_loss_from_target,
)
from proxy_end2.uncertainty import (
    PRECISION_CHOICES,
    ensemble_statistics,
    proxy_precision,
    proxy_target_precision,
)

mpmath.mp.dps = 80
F64 = torch.float64
EPS = 2.0**-23
#: the float64 losses with an analytic row-wise gradient (losses/_rowwise.py), from statistics / stacked teachers
ROWWISE_FROM_STATS = [proxy_dirichlet_loss_from_stats, forward_proxy_dirichlet_loss_from_stats,
                      dirichlet_nll_loss_from_stats]
STACKED_LOSSES = [proxy_dirichlet_loss, forward_proxy_dirichlet_loss, dirichlet_nll_loss, ensemble_kl_loss]


def _randn(*shape: int, scale: float = 1.0, seed: int = 0, dtype=F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)


def _teachers(*lead: int, members: int = 4, k: int = 6, spread: float = 1.5, seed: int = 100) -> torch.Tensor:
    """Disagreeing teachers [..., M, K]: a shared component plus member noise (precision B ~ 10..1000)."""
    shared = _randn(*lead, 1, k, scale=2.0, seed=seed)
    return shared + _randn(*lead, members, k, scale=spread, seed=seed + 1)


def _textbook_proxy(z: torch.Tensor, pbar: torch.Tensor, precision: torch.Tensor, offset: float) -> torch.Tensor:
    """C = -sum pbar (psi(a) - psi(a0)) - H[Dir(a)] / B with torch.distributions' entropy, autograd-able."""
    alphas = z.exp() + offset
    a0 = alphas.sum(-1, keepdim=True)
    expected_nll = -(pbar * (torch.digamma(alphas) - torch.digamma(a0))).sum(-1)
    return expected_nll - Dirichlet(alphas).entropy() / precision


# ====================================================================== proxy precision
def test_proxy_precision_formulas():
    teachers = _teachers(3, 5, seed=1)
    stats = ensemble_statistics(teachers)
    k = teachers.shape[-1]
    # independent MKL / EPKL from stacked probabilities
    p = teachers.softmax(-1)  # [B, T, M, K]
    pbar = p.mean(-2)
    mkl = (pbar * (pbar.log() - p.log().mean(-2))).sum(-1)
    epkl = (p.unsqueeze(-2) * (p.log().unsqueeze(-2) - p.log().unsqueeze(-3))).sum(-1).mean((-1, -2))
    torch.testing.assert_close(proxy_precision(stats), (k - 1) / (2 * mkl + EPS), rtol=1e-12, atol=0)
    torch.testing.assert_close(proxy_precision(stats, "epkl"), (k - 1) / (epkl + EPS), rtol=1e-12, atol=0)
    torch.testing.assert_close(proxy_precision(stats, eps=0.5), (k - 1) / (2 * mkl + 0.5), rtol=1e-12, atol=0)
    target = proxy_target_precision(stats, "mkl", target_offset=0.25)
    assert target.dtype == F64 and target.shape == (3, 5)
    torch.testing.assert_close(target, (k - 1) / (2 * mkl + EPS) + 0.25 * k, rtol=1e-12, atol=0)


def test_proxy_precision_of_identical_members():
    """MKL = 0: float64 statistics give exactly (K-1)/eps; float32 statistics have a round-off floor on MKL
    (2^-24 M (H + 1), see test_uncertainty_ensemble) of the order of eps itself, so beta is only bounded."""
    k, m = 40000, 5
    member = _randn(2, 1, k, scale=3.0, seed=2)
    stats64 = ensemble_statistics(member.expand(2, m, k))
    torch.testing.assert_close(proxy_precision(stats64), torch.full((2,), (k - 1) / EPS, dtype=F64), rtol=1e-6, atol=0)
    stats32 = ensemble_statistics(member.float().expand(2, m, k))
    beta32 = proxy_precision(stats32)
    floor = 2.0**-24 * m * (stats32.entropy_of_expected().double() + 1)
    assert torch.isfinite(beta32).all() and (beta32 <= (k - 1) / EPS).all()
    assert (beta32 >= (k - 1) / (2 * floor + EPS)).all()


def test_proxy_precision_is_permutation_invariant_over_members():
    teachers = _teachers(4, members=5, seed=3)
    a = proxy_precision(ensemble_statistics(teachers))
    b = proxy_precision(ensemble_statistics(teachers[:, [3, 0, 4, 2, 1]]))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


# ====================================================================== proxy loss: value
@pytest.mark.parametrize(
    "model_offset,target_offset,precision", [(1.0, 1.0, "mkl"), (0.5, 0.0, "epkl"), (0.0, 2.0, "mkl")]
)
def test_proxy_value_matches_textbook_formula(model_offset, target_offset, precision):
    teachers = _teachers(2, 3, seed=4)
    z = _randn(2, 3, 6, scale=1.5, seed=5)
    stats = ensemble_statistics(teachers)
    b = proxy_target_precision(stats, precision, target_offset)
    got = proxy_dirichlet_loss(z, teachers, model_offset, target_offset, precision)
    want = _textbook_proxy(z, stats.mean_probs(), b, model_offset)
    assert got.shape == (2, 3) and got.dtype == F64
    # moderate alphas: the textbook form is exact to ~1e-14 here
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("model_offset", [1.0, 0.3])
def test_proxy_equals_scaled_reverse_kl_plus_constant(model_offset):
    """C(z) - KL(Dir(alpha) || Dir(B pbar + 1)) / B must not depend on z (reference section 5.4)."""
    teachers = _teachers(3, seed=6)  # [3, M, K]
    stats = ensemble_statistics(teachers)
    b = proxy_target_precision(stats)
    target = Dirichlet(b.unsqueeze(-1) * stats.mean_probs() + 1)
    diffs = []
    for seed in range(5):
        z = _randn(3, 6, scale=2.0, seed=10 + seed)
        alphas = z.exp() + model_offset
        loss = proxy_dirichlet_loss_from_stats(z, stats, model_offset=model_offset)
        diffs.append(loss - kl_divergence(Dirichlet(alphas), target) / b)
    diffs = torch.stack(diffs)  # [5, 3]
    # the losses themselves vary by O(1) between seeds; the constant must agree to float64 round-off
    assert (diffs.max(0).values - diffs.min(0).values).abs().max() < 1e-10
    losses = torch.stack(
        [proxy_dirichlet_loss_from_stats(_randn(3, 6, scale=2.0, seed=10 + s), stats) for s in range(5)]
    )
    assert (losses.max(0).values - losses.min(0).values).min() > 1e-2  # the check above is not vacuous


def _mp_proxy(z, pbar, b, offset):
    """mpmath value and d/dz of the textbook proxy loss for one position."""
    z = [mpmath.mpf(v) for v in z]
    pbar = [mpmath.mpf(v) for v in pbar]
    b, c = mpmath.mpf(b), mpmath.mpf(offset)
    a = [mpmath.exp(v) + c for v in z]
    a0, k = sum(a), len(a)
    dig0 = mpmath.digamma(a0)
    log_beta = sum(mpmath.loggamma(x) for x in a) - mpmath.loggamma(a0)
    entropy = log_beta - sum((x - 1) * (mpmath.digamma(x) - dig0) for x in a)
    value = -sum(p * (mpmath.digamma(x) - dig0) for p, x in zip(pbar, a)) - entropy / b
    s, tri0 = sum(pbar), mpmath.psi(1, a0)
    grad = [(x - c) * (mpmath.psi(1, x) * ((x - 1) / b - p) - tri0 * ((a0 - k) / b - s)) for x, p in zip(a, pbar)]
    return float(value), torch.tensor([float(g) for g in grad], dtype=F64)


@pytest.mark.parametrize(
    "regime",
    ["near_optimum_B_1e11", "large_logits_small_B", "large_logits_B_3e11", "moderate"],
)
def test_proxy_value_and_gradient_against_mpmath(regime):
    """The regimes of real training: agreeing teachers (B ~ 1e11) with the student near its optimum, and
    large student logits (z ~ 55, alpha_0 ~ 1e25) with disagreeing (small B) or agreeing teachers. The
    textbook lgamma/digamma form is off by ~1e9 in value and ~1e7x in gradient in the large-logit
    regime; ours must be within float64 round-off. Value: 1e-13 relative + 1e-14 absolute. Gradient:
    1e-12 of the largest component where alpha >= 10 (series), 2e-9 where torch.polygamma(1, .) (~1e-9
    accurate below 10) enters."""
    k = 6
    pbar = torch.softmax(_randn(k, scale=3.0, seed=20), -1)
    offset = 1.0
    if regime == "near_optimum_B_1e11":
        b = 1e11
        z = torch.log(b * pbar) + 1e-3 * _randn(k, seed=21)
    elif regime == "large_logits_small_B":
        b = 30.0
        z = 55.0 + 3.0 * _randn(k, seed=22)
    elif regime == "large_logits_B_3e11":
        b = 3e11
        z = 55.0 + 3.0 * _randn(k, seed=23)
    else:
        b = 20.0
        z = _randn(k, seed=24)
    stats = ensemble_statistics(pbar.log().unsqueeze(0))  # a one-member "ensemble" with mean pbar
    precision = torch.tensor(b, dtype=F64)
    z = z.clone().requires_grad_()
    # an explicit B (the regimes fix B, not the teachers)
    value = proxy_dirichlet_loss_from_target(z, stats.log_mean_probs, precision, offset)
    value.backward()
    want_value, want_grad = _mp_proxy(z.detach().tolist(), stats.mean_probs().tolist(), b, offset)
    assert abs(value.item() - want_value) < 1e-13 * abs(want_value) + 1e-14, (value.item(), want_value)
    grad_tol = 2e-9 if regime == "moderate" else 1e-12
    # + 1e-15 absolute: near the optimum the gradient (~1e-5 here) is a difference of O(pbar_k) <= 1 terms,
    # so float64 round-off of those terms, not of the result, sets the floor
    assert (z.grad - want_grad).abs().max() < grad_tol * want_grad.abs().max() + 1e-15, (z.grad, want_grad)


# ====================================================================== proxy loss: gradient
@pytest.mark.parametrize("loss_fn", ROWWISE_FROM_STATS)
def test_analytic_backward_gradcheck(loss_fn):
    teachers = _teachers(2, 3, k=5, seed=30)
    stats = ensemble_statistics(teachers)
    z = _randn(2, 3, 5, scale=1.5, seed=31).requires_grad_()
    for offset in (1.0, 0.0):
        assert torch.autograd.gradcheck(lambda x: loss_fn(x, stats, model_offset=offset), (z,))


@pytest.mark.parametrize("model_offset", [1.0, 0.5])
def test_proxy_gradient_matches_autograd_of_textbook_formula(model_offset):
    teachers = _teachers(4, k=7, seed=32)
    stats = ensemble_statistics(teachers)
    b = proxy_target_precision(stats)
    z = _randn(4, 7, scale=2.0, seed=33).requires_grad_()
    weights = _randn(4, seed=34)  # a non-uniform upstream gradient
    (proxy_dirichlet_loss_from_stats(z, stats, model_offset=model_offset) * weights).sum().backward()
    ours = z.grad.clone()
    z.grad = None
    (_textbook_proxy(z, stats.mean_probs(), b, model_offset) * weights).sum().backward()
    # both sides use torch's trigamma (~1e-9 relative), so agreement is to ~1e-9 of the gradient scale
    torch.testing.assert_close(ours, z.grad, rtol=1e-8, atol=1e-8 * z.grad.abs().max().item())


def test_proxy_gradient_matches_finite_differences():
    """Central differences, h = 1e-5: truncation O(h^2 C''') ~ 1e-10, round-off 1e-16/h ~ 1e-11."""
    teachers = _teachers(k=5, seed=35)
    stats = ensemble_statistics(teachers)
    z = _randn(5, scale=1.5, seed=36).requires_grad_()
    proxy_dirichlet_loss_from_stats(z, stats).backward()
    h = 1e-5
    numeric = torch.zeros(5, dtype=F64)
    for i in range(5):
        dz = torch.zeros(5, dtype=F64)
        dz[i] = h
        up = proxy_dirichlet_loss_from_stats(z.detach() + dz, stats)
        down = proxy_dirichlet_loss_from_stats(z.detach() - dz, stats)
        numeric[i] = (up - down) / (2 * h)
    torch.testing.assert_close(z.grad, numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("model_offset", [1.0, 0.5])
def test_proxy_gradient_vanishes_at_alpha_equal_B_pbar_plus_one(model_offset):
    """Stationary point alpha_k = B pbar_k + 1, i.e. z_k = ln(B pbar_k + 1 - c) (softmax(z) = pbar at c = 1)."""
    teachers = _teachers(3, k=6, seed=37)
    stats = ensemble_statistics(teachers)
    b = proxy_target_precision(stats)
    z_star = torch.log(b.unsqueeze(-1) * stats.mean_probs() + 1 - model_offset).requires_grad_()
    proxy_dirichlet_loss_from_stats(z_star, stats, model_offset=model_offset).sum().backward()
    z_rand = _randn(3, 6, seed=38).requires_grad_()
    proxy_dirichlet_loss_from_stats(z_rand, stats, model_offset=model_offset).sum().backward()
    # ~1e-9 relative accuracy of torch's trigamma times O(1) gradient terms that cancel at the optimum
    assert z_star.grad.abs().max() < 1e-7 * z_rand.grad.abs().max()


def test_proxy_minimiser_from_random_start_is_the_ensemble_mean():
    """L-BFGS on z from a random start (offset 1) reaches exp(z) = B pbar, softmax(z) = pbar."""
    teachers = _teachers(k=5, seed=39)
    stats = ensemble_statistics(teachers)
    b = proxy_target_precision(stats)
    assert 5 < b.item() < 1e4  # a moderate B keeps the problem well conditioned
    z = _randn(5, seed=40).requires_grad_()
    opt = torch.optim.LBFGS(
        [z], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = proxy_dirichlet_loss_from_stats(z, stats)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(z.detach().softmax(-1), stats.mean_probs(), rtol=1e-6, atol=1e-8)
    # the overall scale of exp(z) (the student's precision) is the flattest direction of the loss (the
    # entropy term is weighted by 1/B), so L-BFGS's stopping rule leaves it ~1e-6 off; 1e-5 still pins it
    torch.testing.assert_close(z.detach().exp(), b * stats.mean_probs(), rtol=1e-5, atol=0)


def test_proxy_epkl_precision_option_has_its_own_optimum():
    teachers = _teachers(2, k=6, seed=41)
    stats = ensemble_statistics(teachers)
    b_epkl, b_mkl = proxy_target_precision(stats, "epkl"), proxy_target_precision(stats, "mkl")
    assert ((b_epkl - b_mkl).abs() > 1e-3 * b_mkl).all()  # the two options really differ here
    z_star = torch.log(b_epkl.unsqueeze(-1) * stats.mean_probs()).requires_grad_()
    proxy_dirichlet_loss(z_star, teachers, precision="epkl").sum().backward()
    grad_epkl = z_star.grad.abs().max()
    z_star.grad = None
    proxy_dirichlet_loss(z_star, teachers, precision="mkl").sum().backward()
    assert grad_epkl < 1e-7 * z_star.grad.abs().max()


@pytest.mark.parametrize("loss_fn", ROWWISE_FROM_STATS)
def test_saves_no_float64_vocabulary_sized_tensor_for_backward(loss_fn):
    """Only z (input dtype), the statistics' own ln pbar / mean ln p and B [...] may be saved."""
    k = 50
    teachers = _teachers(3, k=k, seed=42).float()
    stats = ensemble_statistics(teachers)
    z = _randn(3, k, seed=43, dtype=torch.float32).requires_grad_()
    saved = []

    def pack(tensor):
        saved.append((tensor.dtype, tuple(tensor.shape)))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(z, stats)
    assert len(saved) <= 3, saved
    assert not any(dtype == F64 and shape[-1:] == (k,) for dtype, shape in saved), saved
    loss.sum().backward()
    assert z.grad.dtype == torch.float32 and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("loss_fn", [proxy_dirichlet_loss, forward_proxy_dirichlet_loss, dirichlet_nll_loss])
@pytest.mark.parametrize("chunk_elements", [5, 13, 1 << 30])
def test_row_chunking_does_not_change_results(monkeypatch, chunk_elements, loss_fn):
    """Forward/backward run on chunks of rows (bounded float64 temporaries): 1 row, 2 rows, everything."""
    import proxy_end2.uncertainty._numerics as numerics

    teachers = _teachers(3, 4, k=7, seed=48)  # 12 rows
    z = _randn(3, 4, 7, scale=2.0, seed=49).requires_grad_()
    weights = _randn(3, 4, seed=50)
    (loss_fn(z, teachers) * weights).sum().backward()
    want_value, want_grad = loss_fn(z, teachers).detach(), z.grad.clone()
    z.grad = None
    monkeypatch.setattr(numerics, "CHUNK_ELEMENTS", chunk_elements)
    value = loss_fn(z, teachers)
    (value * weights).sum().backward()
    # same per-row arithmetic, only the batching differs: equal up to reduction-order round-off
    torch.testing.assert_close(value.detach(), want_value, rtol=1e-15, atol=0)
    torch.testing.assert_close(z.grad, want_grad, rtol=1e-15, atol=1e-18)


def test_proxy_no_gradient_flows_into_teachers():
    teachers = _teachers(2, k=5, seed=44).requires_grad_()
    z = _randn(2, 5, seed=45).requires_grad_()
    proxy_dirichlet_loss(z, teachers).sum().backward()
    assert z.grad is not None and teachers.grad is None


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_student_gradients_come_back_in_input_dtype(half):
    teachers = _teachers(2, 3, k=8, seed=46)
    z_half = _randn(2, 3, 8, scale=2.0, seed=47, dtype=half).requires_grad_()
    z_f32 = z_half.detach().float().requires_grad_()
    for loss_fn in STACKED_LOSSES:
        loss_half, loss_f32 = loss_fn(z_half, teachers), loss_fn(z_f32, teachers)
        # the half logits are upcast exactly, so values are identical to the float32 path
        torch.testing.assert_close(loss_half, loss_f32, rtol=0, atol=0)
        loss_half.sum().backward()
        loss_f32.sum().backward()
        assert z_half.grad.dtype == half
        torch.testing.assert_close(z_half.grad, z_f32.grad.to(half), rtol=0, atol=0)
        z_half.grad = z_f32.grad = None


# ====================================================================== EnD^2 and forward KL
@pytest.mark.parametrize("model_offset", [1.0, 0.0])
def test_dirichlet_nll_equals_mean_member_negative_log_likelihood(model_offset):
    teachers = _teachers(3, 2, k=6, seed=50)
    z = _randn(3, 2, 6, scale=1.5, seed=51).requires_grad_()
    got = dirichlet_nll_loss(z, teachers, model_offset)
    alphas = z.exp() + model_offset
    members = teachers.softmax(-1)  # [B, T, M, K]
    want = -Dirichlet(alphas.unsqueeze(-2)).log_prob(members).mean(-1)  # [B, T]
    assert got.shape == (3, 2) and got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)
    (g_got,) = torch.autograd.grad(got.sum(), z)
    (g_want,) = torch.autograd.grad(want.sum(), z)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", [1e6, 1e12, 1e25])
def test_dirichlet_nll_at_huge_precision_is_at_the_conditioning_limit(scale):
    """Student mean equal to the (single) teacher's distribution, alpha_0 ~ 1e6..1e25. The EnD^2 loss is then
    ill-conditioned: (alpha_k - 1)(ln mu_k - g_k) amplifies the float64 round-off of ln mu_k and g_k by
    alpha_k, so no float64 evaluation can beat eps * sum_k alpha_k (|ln mu_k| + |g_k|) (the "bound"). The
    value and gradient must be within 8 bounds of mpmath (measured: at most ~4)."""
    k = 5
    mu = torch.softmax(_randn(k, seed=57), -1)
    z = torch.log(mu * scale).requires_grad_()  # alpha = scale * mu + 1
    log_p = torch.log_softmax(torch.log(mu * scale + 1), -1)  # the teacher is exactly the Dirichlet mean
    stats = ensemble_statistics(log_p.unsqueeze(0))
    value = dirichlet_nll_loss_from_stats(z, stats)
    value.backward()
    a = [mpmath.exp(mpmath.mpf(v)) + 1 for v in z.detach().tolist()]
    a0 = sum(a)
    g = [mpmath.mpf(v) for v in stats.mean_log_probs.tolist()]
    want = sum(mpmath.loggamma(x) for x in a) - mpmath.loggamma(a0) - sum((x - 1) * y for x, y in zip(a, g))
    want_grad = torch.tensor(
        [float((x - 1) * (mpmath.digamma(x) - mpmath.digamma(a0) - y)) for x, y in zip(a, g)], dtype=F64
    )
    alphas = z.detach().exp() + 1
    magnitude = torch.log(alphas / alphas.sum()).abs() + stats.mean_log_probs.abs()  # [K]
    bound = 2.0**-52 * (alphas * magnitude).sum().item()
    grad_bound = 2.0**-52 * (alphas - 1) * (magnitude + 1)  # [K]
    assert abs(value.item() - float(want)) < 8 * bound, (value.item(), float(want), bound)
    assert ((z.grad - want_grad).abs() < 8 * grad_bound).all(), (z.grad, want_grad, grad_bound)


def test_ensemble_kl_matches_kl_div_and_vanishes_at_the_mean():
    teachers = _teachers(4, 3, k=7, seed=52)
    z = _randn(4, 3, 7, scale=2.0, seed=53).requires_grad_()
    got = ensemble_kl_loss(z, teachers)
    pbar = teachers.softmax(-1).mean(-2)
    want = F.kl_div(z.log_softmax(-1), pbar, reduction="none").sum(-1)
    assert got.shape == (4, 3) and got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    torch.testing.assert_close(z.grad, z.detach().softmax(-1) - pbar, rtol=1e-12, atol=1e-12)
    at_mean = ensemble_kl_loss(pbar.log() + 3.7, teachers)  # softmax(z) = pbar (shift invariance)
    assert (at_mean >= 0).all() and (at_mean < 1e-14).all()


def test_ensemble_kl_dtype_rule():
    teachers = _teachers(2, k=5, seed=54)
    z = _randn(2, 5, seed=55)
    assert ensemble_kl_loss(z.float(), teachers.float()).dtype == torch.float32
    assert ensemble_kl_loss(z.half(), teachers.half()).dtype == torch.float32
    assert ensemble_kl_loss(z.float(), teachers).dtype == F64


# ====================================================================== shapes, stress, errors
@pytest.mark.parametrize("loss_fn", STACKED_LOSSES)
def test_any_leading_shape(loss_fn):
    teachers = _teachers(2, 3, k=5, seed=56)  # [B, T, M, K]
    z = _randn(2, 3, 5, seed=57)
    full = loss_fn(z, teachers)
    assert full.shape == (2, 3)
    flat = loss_fn(z.reshape(6, 5), teachers.reshape(6, 4, 5))
    single = loss_fn(z[1, 2], teachers[1, 2])  # [K] student, [M, K] teachers
    assert single.shape == ()
    torch.testing.assert_close(flat.reshape(2, 3), full, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(single, full[1, 2], rtol=1e-13, atol=1e-13)


def _stress_cases(k: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(student logits [2, K] float32, teacher logits [2, 4, K] float32) for the regimes of the brief."""
    gen = torch.Generator().manual_seed(60)
    base = torch.randn(2, 4, k, generator=gen)
    confident = base.clone()
    confident[:, :, 3] += 30.0  # near one-hot teachers, logit spread ~30
    confident[:, 1, 9] += 35.0  # one of them on another class
    identical = (base[:, :1] + 0.0).expand(2, 4, k).contiguous()
    identical[:, :, 5] += 30.0  # agreeing and confident: MKL ~ 0, B ~ 3e11
    student_small = torch.randn(2, k, generator=gen)
    student_large = torch.randn(2, k, generator=gen) * 5
    student_large[:, 3] = 60.0
    student_large[:, 7] = 55.0
    return {
        "confident_teachers": (student_small, confident),
        "identical_teachers": (student_small, identical),
        "identical_teachers_large_student": (student_large, identical),
        "confident_teachers_large_student": (student_large, confident),
    }


@pytest.mark.parametrize(
    "case",
    [
        "confident_teachers",
        "identical_teachers",
        "identical_teachers_large_student",
        "confident_teachers_large_student",
    ],
)
@pytest.mark.parametrize("loss_fn", STACKED_LOSSES)
def test_large_vocabulary_stress_is_finite(case, loss_fn):
    k = 40000
    student, teachers = _stress_cases(k)[case]
    for dtype in (torch.float32, torch.bfloat16):
        z = student.detach().to(dtype).clone().requires_grad_()
        loss = loss_fn(z, teachers)
        assert torch.isfinite(loss).all(), (case, dtype, loss)
        loss.sum().backward()
        assert torch.isfinite(z.grad).all(), (case, dtype)
    if loss_fn is proxy_dirichlet_loss:
        b = proxy_target_precision(ensemble_statistics(teachers))
        # the documented gradient bound of the proxy loss (model_offset >= 1), whatever the logits
        assert z.grad.float().abs().max() <= 2.3 + 1.3 * (k + 2) / b.min()
        if case.startswith("identical"):
            assert (b > 1e11).all()  # the regime really is B ~ K / eps


def test_proxy_stress_gradient_is_accurate_at_large_vocabulary():
    """K = 40000, identical teachers (B ~ 3e11), student at its optimum except one class: the gradient must
    vanish on the untouched classes to float32-level accuracy (the textbook form gives O(1) noise there)."""
    k = 40000
    _, teachers = _stress_cases(k)["identical_teachers"]
    stats = ensemble_statistics(teachers)
    b = proxy_target_precision(stats)
    z = torch.log(b.unsqueeze(-1) * stats.mean_probs().double())  # the optimum, float64
    z[:, 11] += 2.0
    z.requires_grad_()
    proxy_dirichlet_loss_from_stats(z, stats).sum().backward()
    others = torch.cat([z.grad[:, :11], z.grad[:, 12:]], dim=-1)
    assert z.grad[:, 11].abs().min() > 1e-3 * stats.mean_probs()[:, 11].min()  # perturbed class pulled back
    # untouched classes only feel the change of alpha_0 (relative 1e-3 at most): tiny, and finite
    assert torch.isfinite(others).all() and others.abs().max() < 1e-2


def test_errors():
    teachers = _teachers(2, k=5, seed=70)
    stats = ensemble_statistics(teachers)
    z = _randn(2, 5, seed=71)
    for fn in STACKED_LOSSES:
        with pytest.raises(ValueError, match="student logits have K = 6, teacher logits have K = 5"):
            fn(_randn(2, 6), teachers)
        with pytest.raises(ValueError, match="leading shape mismatch"):
            fn(_randn(3, 5), teachers)
        with pytest.raises(ValueError, match=r"\[\.\.\., M, K\]"):
            fn(z[0], teachers[0, 0])
    for fn in ROWWISE_FROM_STATS + [ensemble_kl_loss_from_stats]:
        with pytest.raises(ValueError, match="teacher statistics have K = 5"):
            fn(_randn(2, 6), stats)
        with pytest.raises(ValueError, match=r"leading shape \(2,\)"):
            fn(_randn(2, 3, 5), stats)
        with pytest.raises(ValueError, match="floating"):
            fn(torch.zeros(2, 5, dtype=torch.long), stats)
    with pytest.raises(ValueError, match=r"precision must be one of \('mkl', 'epkl'\), got 'kl'"):
        proxy_dirichlet_loss(z, teachers, precision="kl")
    with pytest.raises(ValueError, match="target_offset"):
        proxy_dirichlet_loss(z, teachers, target_offset=-1.0)
    with pytest.raises(ValueError, match="model_offset"):
        proxy_dirichlet_loss(z, teachers, model_offset=-1.0)
    with pytest.raises(ValueError, match="model_offset"):
        dirichlet_nll_loss(z, teachers, model_offset=-1.0)
    with pytest.raises(ValueError, match="model_offset"):
        forward_proxy_dirichlet_loss(z, teachers, model_offset=-1.0)
    with pytest.raises(ValueError, match="target_offset"):
        forward_proxy_dirichlet_loss(z, teachers, target_offset=-1.0)
    with pytest.raises(ValueError, match="eps"):
        proxy_precision(stats, eps=0.0)
    with pytest.raises(ValueError, match="K >= 2"):
        proxy_precision(ensemble_statistics(torch.zeros(3, 1)))
    assert PRECISION_CHOICES == ("mkl", "epkl")


# ====================================================================== fused value + gradient (memory, dtypes, paths)
@pytest.mark.parametrize("loss_fn", ROWWISE_FROM_STATS)
@pytest.mark.parametrize(
    "dtype,saved_dtype",
    [(F64, F64), (torch.float32, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.float32)],
)
def test_saves_only_the_gradient_in_the_logits_dtype(loss_fn, dtype, saved_dtype):
    """The gradient is computed in the forward: the only saved tensor is dC/dz [..., K] (float32 for half
    logits), neither the logits nor the statistics."""
    k = 11
    stats = ensemble_statistics(_teachers(2, 3, k=k, seed=80).float())
    z = _randn(2, 3, k, seed=81, dtype=dtype).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = loss_fn(z, stats)
    assert [(t.dtype, tuple(t.shape)) for t in saved] == [(saved_dtype, (6, k))]  # flattened [N, K]
    assert all(t.data_ptr() not in (z.data_ptr(), stats.log_mean_probs.data_ptr(), stats.mean_log_probs.data_ptr())
               for t in saved)
    loss.sum().backward()
    assert z.grad.dtype == dtype


@pytest.mark.parametrize("loss_fn", ROWWISE_FROM_STATS)
def test_no_gradient_work_without_grad(loss_fn):
    """Under no_grad (validation) or for logits without requires_grad the same value, and nothing saved."""
    stats = ensemble_statistics(_teachers(3, k=9, seed=82))
    z = _randn(3, 9, scale=2.0, seed=83).requires_grad_()
    want = loss_fn(z, stats)
    with torch.no_grad():
        got = loss_fn(z, stats)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)
    torch.testing.assert_close(loss_fn(z.detach(), stats), want.detach(), rtol=0, atol=0)
    assert not got.requires_grad


@pytest.mark.parametrize("loss_fn", ROWWISE_FROM_STATS)
def test_backward_twice_with_retained_graph(loss_fn):
    stats = ensemble_statistics(_teachers(3, k=9, seed=84))
    z = _randn(3, 9, scale=2.0, seed=85).requires_grad_()
    loss = loss_fn(z, stats)
    (g1,) = torch.autograd.grad((loss * 2.0).sum(), z, retain_graph=True)
    (g2,) = torch.autograd.grad(loss.sum(), z)
    torch.testing.assert_close(g1, 2.0 * g2, rtol=0, atol=0)


@pytest.mark.parametrize("loss_fn", ROWWISE_FROM_STATS)
def test_half_precision_gradient_is_scaled_before_rounding(loss_fn):
    """A loss-scaled fp16 backward (upstream 2^20) rounds upstream * dC/dz once to fp16, like the float32
    path, so gradients below fp16's range before scaling survive (the saved gradient is float32)."""
    teachers = _teachers(2, k=8, seed=86)
    stats = ensemble_statistics(teachers)
    z16 = (_randn(2, 8, scale=2.0, seed=87) - 25.0).half().requires_grad_()  # alpha - 1 ~ 1e-11: tiny gradients
    z32 = z16.detach().float().requires_grad_()
    scale = 2.0**20
    (loss_fn(z16, stats).sum() * scale).backward()
    (loss_fn(z32, stats).sum() * scale).backward()
    assert z16.grad.dtype == torch.float16
    tiny = z32.grad.abs() / scale < 2.0**-25  # these would round to 0 in fp16 before scaling
    assert tiny.any() and (z16.grad[tiny] != 0).float().mean() > 0.5
    torch.testing.assert_close(z16.grad, z32.grad.half(), rtol=0, atol=0)


@pytest.mark.parametrize("loss_fn", ROWWISE_FROM_STATS)
def test_clamped_logits_have_zero_gradient_and_the_value_of_the_bound(loss_fn):
    from proxy_end2.uncertainty import concentration_bounds

    k = 6
    stats = ensemble_statistics(_teachers(3, k=k, seed=88))
    lo, hi = concentration_bounds(k, F64)
    z = _randn(3, k, seed=89)
    z[0, 1], z[1, 2], z[2, 3] = 1e4, -1e4, float("inf")
    z.requires_grad_()
    loss = loss_fn(z, stats, model_offset=1.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    assert z.grad[0, 1] == 0 and z.grad[1, 2] == 0 and z.grad[2, 3] == 0
    torch.testing.assert_close(loss.detach(), loss_fn(z.detach().clamp(lo, hi), stats), rtol=0, atol=0)
    assert (z.grad[0].abs().sum() > 0) and (z.grad[1].abs().sum() > 0)


def test_default_chunk_size_depends_on_the_device(monkeypatch):
    import proxy_end2.uncertainty._numerics as numerics

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert numerics.CHUNK_ELEMENTS is None
    assert numerics.row_slices(100_000, 1000, cpu)[0] == slice(0, (1 << 20) // 1000)
    assert numerics.row_slices(100_000, 1000, cuda)[0] == slice(0, (1 << 24) // 1000)
    monkeypatch.setattr(numerics, "CHUNK_ELEMENTS", 3000)
    assert numerics.row_slices(10, 1000, cuda) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]


def test_end2_with_offset_zero_has_a_finite_minimum_when_the_members_differ():
    """alpha = exp(z) (offset 0): the Dirichlet maximum-likelihood fit of differing members exists, so the
    EnD^2 loss is bounded below and gradient descent settles at a finite precision (K = 200, M = 3); only
    identical members make it unbounded (the precision then grows for ever and the loss keeps falling)."""
    g = torch.Generator().manual_seed(0)
    k, m = 200, 3
    base = torch.randn(k, generator=g, dtype=F64) * 2
    teachers = (base + 0.5 * torch.randn(m, k, generator=g, dtype=F64)).unsqueeze(0)  # [1, M, K]
    z = torch.zeros(1, k, dtype=F64, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(1500):
        opt.zero_grad()
        loss = dirichlet_nll_loss(z, teachers, model_offset=0.0).sum()
        loss.backward()
        opt.step()
    assert z.grad.abs().max().item() < 1e-8  # a stationary point: the minimum of a convex function of alpha
    assert math.isfinite(loss.item()) and 100 < z.detach().exp().sum().item() < 1e4
    same = base.expand(1, m, k)
    values = [dirichlet_nll_loss((base + shift).unsqueeze(0), same, model_offset=0.0).item() for shift in (0, 10, 20)]
    assert values[0] > values[1] > values[2] and values[2] < loss.item()
