"""The forward-KL Proxy-Dirichlet loss KL(Dir(B pbar + 1) || Dir(exp(z) + c)) (proxy_end2.losses.forward_proxy_dirichlet).

Oracles: torch.distributions.kl_divergence, mpmath (80 digits) for value and gradient where float64 textbook
formulas cancel, central finite differences, the closed-form minimiser alpha = beta (shared with the reverse
loss), and the authors' own target construction. The properties every loss shares (gradcheck, chunking,
saved tensors, half precision, errors) are parametrised in test_losses.py.
"""
from __future__ import annotations

import mpmath
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

from proxy_end2.losses import (
    forward_proxy_dirichlet_loss,
    forward_proxy_dirichlet_loss_from_stats,
    forward_proxy_dirichlet_loss_from_target,
    proxy_dirichlet_loss_from_stats,
)
from proxy_end2.uncertainty import concentration_bounds, ensemble_statistics, proxy_precision, proxy_target_precision
from test_losses import _randn, _stress_cases, _teachers

mpmath.mp.dps = 80
F64 = torch.float64


def _target(stats, target_offset=1.0, precision="mkl"):
    """beta = B pbar + 1, B = beta_hat + K t: the reverse loss's effective target, [..., K]."""
    b = proxy_target_precision(stats, precision, target_offset)
    return b.unsqueeze(-1) * stats.mean_probs().double() + 1.0


@pytest.mark.parametrize(
    "model_offset,target_offset,precision", [(1.0, 1.0, "mkl"), (0.5, 0.0, "epkl"), (0.0, 2.0, "mkl")]
)
def test_value_and_gradient_match_torch_distributions(model_offset, target_offset, precision):
    teachers = _teachers(2, 3, seed=4)
    stats = ensemble_statistics(teachers)
    z = _randn(2, 3, 6, scale=1.5, seed=5).requires_grad_()
    got = forward_proxy_dirichlet_loss(z, teachers, model_offset, target_offset, precision)
    want = kl_divergence(Dirichlet(_target(stats, target_offset, precision)), Dirichlet(z.exp() + model_offset))
    assert got.shape == (2, 3) and got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)  # moderate alphas: textbook exact to ~1e-14
    (g_got,) = torch.autograd.grad(got.sum(), z)
    (g_want,) = torch.autograd.grad(want.sum(), z)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-10)


def test_authors_target_is_target_offset_zero():
    """The authors' forward criterion: beta_k = beta_hat pbar_k + t with their t = 1, i.e. Dir(beta_hat pbar + 1):
    our loss with target_offset = 0."""
    teachers = _teachers(4, seed=6)
    stats = ensemble_statistics(teachers)
    z = _randn(4, 6, scale=2.0, seed=7)
    beta_hat = proxy_precision(stats)
    authors = beta_hat.unsqueeze(-1) * stats.mean_probs() + 1.0  # t = 1 in their beta_k = beta_hat pbar_k + t
    want = kl_divergence(Dirichlet(authors), Dirichlet(z.exp() + 1.0))
    got = forward_proxy_dirichlet_loss_from_stats(z, stats, target_offset=0.0)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


def _mp_forward(z, pbar, b, offset):
    """mpmath KL(Dir(b pbar + 1) || Dir(exp(z) + c)) and its d/dz for one position."""
    c, b = mpmath.mpf(offset), mpmath.mpf(b)
    a = [mpmath.exp(mpmath.mpf(v)) + c for v in z]
    beta = [b * mpmath.mpf(p) + 1 for p in pbar]
    a0, b0 = sum(a), sum(beta)
    value = (mpmath.loggamma(b0) - sum(mpmath.loggamma(x) for x in beta) - mpmath.loggamma(a0)
             + sum(mpmath.loggamma(x) for x in a)
             + sum((y - x) * (mpmath.digamma(y) - mpmath.digamma(b0)) for x, y in zip(a, beta)))
    grad = [(x - c) * (mpmath.digamma(x) - mpmath.digamma(a0) - mpmath.digamma(y) + mpmath.digamma(b0))
            for x, y in zip(a, beta)]
    return float(value), torch.tensor([float(g) for g in grad], dtype=F64)


@pytest.mark.parametrize("regime", ["near_optimum_B_1e11", "large_logits_small_B", "large_logits_B_3e11", "moderate"])
def test_value_and_gradient_against_mpmath(regime):
    """Agreeing teachers (B ~ 1e11) with the student near its optimum, large student logits (alpha_0 ~ 1e25) with
    disagreeing or agreeing teachers, and a moderate case. The forward KL is not divided by B: rounding d_k =
    ln(nu_k / mu_k) to float64 is amplified by alpha_k, so no float64 evaluation beats the bound
    eps * sum_k alpha_k (|d_k| + 1) (value) and eps * alpha_k * (|d_k| + 1) (gradient); ours must be within 8 of
    them, plus 1e-13 relative."""
    k = 6
    pbar = torch.softmax(_randn(k, scale=3.0, seed=20), -1)
    b, z = {
        "near_optimum_B_1e11": (1e11, torch.log(1e11 * pbar) + 1e-3 * _randn(k, seed=21)),
        "large_logits_small_B": (30.0, 55.0 + 3.0 * _randn(k, seed=22)),
        "large_logits_B_3e11": (3e11, 55.0 + 3.0 * _randn(k, seed=23)),
        "moderate": (20.0, _randn(k, seed=24)),
    }[regime]
    stats = ensemble_statistics(pbar.log().unsqueeze(0))  # a one-member "ensemble" with mean pbar
    z = z.clone().requires_grad_()
    value = forward_proxy_dirichlet_loss_from_target(z, stats.log_mean_probs, torch.tensor(b, dtype=F64), 1.0)
    value.backward()
    want_value, want_grad = _mp_forward(z.detach().tolist(), stats.mean_probs().tolist(), b, 1.0)
    alphas = z.detach().exp() + 1.0
    betas = b * stats.mean_probs() + 1.0
    d = (alphas / betas).log() - (alphas.sum() / betas.sum()).log()
    bound = 2.0**-52 * (alphas * (d.abs() + 1.0)).sum().item()
    grad_bound = 2.0**-52 * alphas * (d.abs() + 1.0)
    assert abs(value.item() - want_value) < 8 * bound + 1e-13 * abs(want_value), (value.item(), want_value, bound)
    assert ((z.grad - want_grad).abs() < 8 * grad_bound + 1e-13 * want_grad.abs().max()).all(), (z.grad, want_grad)
    if regime == "moderate":
        assert bound < 1e-13  # the bound is not a loophole where nothing is large


def test_gradient_matches_finite_differences():
    """Central differences, h = 1e-5: truncation O(h^2 C''') ~ 1e-10, round-off 1e-16/h ~ 1e-11."""
    stats = ensemble_statistics(_teachers(k=5, seed=35))
    z = _randn(5, scale=1.5, seed=36).requires_grad_()
    forward_proxy_dirichlet_loss_from_stats(z, stats).backward()
    h, numeric = 1e-5, torch.zeros(5, dtype=F64)
    for i in range(5):
        dz = torch.zeros(5, dtype=F64)
        dz[i] = h
        up = forward_proxy_dirichlet_loss_from_stats(z.detach() + dz, stats)
        down = forward_proxy_dirichlet_loss_from_stats(z.detach() - dz, stats)
        numeric[i] = (up - down) / (2 * h)
    torch.testing.assert_close(z.grad, numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("model_offset", [1.0, 0.5])
def test_zero_with_zero_gradient_at_alpha_equal_beta_the_reverse_loss_optimum(model_offset):
    """alpha = B pbar + 1 (z_k = ln(B pbar_k + 1 - c)): KL = 0 and no gradient, for both directions of the KL;
    elsewhere the forward KL is positive."""
    stats = ensemble_statistics(_teachers(3, k=6, seed=37))
    z_star = torch.log(_target(stats) - model_offset).requires_grad_()
    value = forward_proxy_dirichlet_loss_from_stats(z_star, stats, model_offset=model_offset)
    value.sum().backward()
    z_rand = _randn(3, 6, seed=38).requires_grad_()
    random_value = forward_proxy_dirichlet_loss_from_stats(z_rand, stats, model_offset=model_offset)
    random_value.sum().backward()
    assert value.abs().max() < 1e-12 and (random_value > 1e-3).all()
    assert z_star.grad.abs().max() < 1e-12 * z_rand.grad.abs().max()
    z_star.grad = None
    proxy_dirichlet_loss_from_stats(z_star, stats, model_offset=model_offset).sum().backward()
    assert z_star.grad.abs().max() < 1e-7  # the reverse loss has its minimum there too (trigamma ~1e-9 accurate)


def test_minimiser_from_random_start_is_the_target():
    """L-BFGS on z from a random start (offset 1) reaches exp(z) = B pbar, i.e. softmax(z) = pbar."""
    stats = ensemble_statistics(_teachers(k=5, seed=39))
    b = proxy_target_precision(stats)
    z = _randn(5, seed=40).requires_grad_()
    opt = torch.optim.LBFGS([z], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = forward_proxy_dirichlet_loss_from_stats(z, stats)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(z.detach().softmax(-1), stats.mean_probs(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(z.detach().exp(), b * stats.mean_probs(), rtol=1e-5, atol=0)


def test_large_vocabulary_agreeing_teachers_gradient_pulls_back():
    """K = 40000, identical confident teachers (B ~ 3e11), the student at the target except one class raised:
    finite value and gradient, the raised class is pushed down. At the target the value is 0 up to the
    conditioning bound eps * sum_k alpha_k (~7e-5 here); the perturbed KL is well above it."""
    _, teachers = _stress_cases(40000)["identical_teachers"]
    stats = ensemble_statistics(teachers)
    z = torch.log(_target(stats) - 1.0)
    at_optimum = forward_proxy_dirichlet_loss_from_stats(z, stats)
    z[:, 11] += 2.0
    z.requires_grad_()
    value = forward_proxy_dirichlet_loss_from_stats(z, stats)
    value.sum().backward()
    assert (proxy_target_precision(stats) > 1e11).all()
    assert torch.isfinite(value).all() and torch.isfinite(z.grad).all()
    bound = 2.0**-52 * (z.detach().exp() + 1.0).sum(-1)  # [2]
    assert (at_optimum.abs() < 8 * bound).all() and (value > 50 * bound).all(), (at_optimum, value, bound)
    assert (z.grad[:, 11] > 0).all()


def test_clamped_logits_have_zero_gradient():
    """Outside the concentration bounds the logit is clamped (gradient 0, value of the bound). Below, the value is
    ordinary; above (z > ~688 at K = 6) alpha_0 ~ 1e300 and the KL is of order alpha_0 ln alpha_0: astronomically
    large (or inf), which the criterion reports as a non-finite or absurd loss."""
    k = 6
    stats = ensemble_statistics(_teachers(2, k=k, seed=88))
    lo, _ = concentration_bounds(k, F64)
    z = _randn(2, k, seed=89)
    z[0, 1], z[1, 2] = -1e4, -float("inf")
    z.requires_grad_()
    loss = forward_proxy_dirichlet_loss_from_stats(z, stats)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    assert z.grad[0, 1] == 0 and z.grad[1, 2] == 0 and z.grad[0].abs().sum() > 0
    torch.testing.assert_close(loss.detach(), forward_proxy_dirichlet_loss_from_stats(z.detach().clamp(min=lo), stats),
                               rtol=0, atol=0)
    huge = _randn(2, k, seed=90)
    huge[0, 0] = 1e4
    huge.requires_grad_()
    value = forward_proxy_dirichlet_loss_from_stats(huge, stats)
    value.sum().backward()
    assert value[0] > 1e300 and huge.grad[0, 0] == 0
