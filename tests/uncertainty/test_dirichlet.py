"""Dirichlet functions (proxy_end2.uncertainty.dirichlet).

Oracles: torch.distributions (entropy, log_prob, kl_divergence) at moderate concentrations, mpmath at 80
significant digits where float64 textbook formulas cancel (alpha_0 up to 1e30), Monte Carlo with
Dirichlet.sample for the uncertainty measures, and closed-form identities/limits.
"""
from __future__ import annotations

import math

import mpmath
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

from proxy_end2.uncertainty import (
    UNCERTAINTY_KEYS,
    dirichlet_concentrations,
    dirichlet_entropy,
    dirichlet_kl,
    dirichlet_log_beta,
    dirichlet_log_prob,
    dirichlet_uncertainty,
)
from proxy_end2.uncertainty._numerics import (
    digamma1p_minus_log,
    digamma_minus_log,
    lgamma_stirling_remainder,
    x_trigamma_minus_one,
)
from proxy_end2.uncertainty.dirichlet import concentration_bounds

mpmath.mp.dps = 80
F64 = torch.float64


def _alphas(*shape: int, low: float = 0.05, high: float = 50.0, seed: int = 0) -> torch.Tensor:
    """Log-uniform concentrations in [low, high], float64."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(*shape, generator=gen, dtype=F64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


# ---------------------------------------------------------------- mpmath references (one position)
def _mp(values) -> list:
    return [mpmath.mpf(float(v)) for v in values]  # exact binary values of the float64 inputs


def _mp_log_beta(a):
    return sum(mpmath.loggamma(x) for x in a) - mpmath.loggamma(sum(a))


def _mp_entropy(a):
    a0 = sum(a)
    return _mp_log_beta(a) - sum((x - 1) * (mpmath.digamma(x) - mpmath.digamma(a0)) for x in a)


def _mp_kl(a, b):
    a0 = sum(a)
    cross = sum((x - y) * (mpmath.digamma(x) - mpmath.digamma(a0)) for x, y in zip(a, b))
    return _mp_log_beta(b) - _mp_log_beta(a) + cross


def _mp_uncertainty(a) -> dict:
    a0 = sum(a)
    mu = [x / a0 for x in a]
    eoe = -sum(m * mpmath.log(m) for m in mu)
    exe = -sum(m * (mpmath.digamma(x + 1) - mpmath.digamma(a0 + 1)) for m, x in zip(mu, a))
    mkl = sum(m * (mpmath.log(m) - mpmath.digamma(x) + mpmath.digamma(a0)) for m, x in zip(mu, a))
    return {"entropy_of_expected": eoe, "expected_entropy": exe, "mutual_information": eoe - exe,
            "epkl": (len(a) - 1) / a0, "mkl": mkl}


# ---------------------------------------------------------------- special-function remainders
_POINTS = [1e-8, 1e-3, 0.3, 1.0, 2.5, 9.999, 10.0, 10.001, 37.0, 1e3, 1e7, 1e11, 1e20, 1e30]


def test_remainder_functions_against_mpmath():
    """r = psi - ln, s = psi(x+1) - ln, phi = Stirling remainder, t = x psi' - 1, both sides of the switch
    at x = 10. Tolerances: float64 series/direct evaluation is good to ~1e-14 relative (phi below 10 is a
    difference of O(10) numbers: 1e-14 absolute); torch.polygamma(1, .) is only ~1e-9 accurate (see
    x_trigamma_minus_one), hence 5e-9 for t below 10."""
    x = torch.tensor(_POINTS, dtype=F64)
    got = {"r": digamma_minus_log(x), "s": digamma1p_minus_log(x), "phi": lgamma_stirling_remainder(x),
           "t": x_trigamma_minus_one(x)}
    for i, v in enumerate(_POINTS):
        xm = mpmath.mpf(v)
        want = {
            "r": mpmath.digamma(xm) - mpmath.log(xm),
            "s": mpmath.digamma(xm + 1) - mpmath.log(xm),
            "phi": mpmath.loggamma(xm) - (xm - 0.5) * mpmath.log(xm) + xm - 0.5 * mpmath.log(2 * mpmath.pi),
            "t": xm * mpmath.psi(1, xm) - 1,
        }
        for name, ref in want.items():
            if name == "phi" and v < 10:
                tol = 1e-14 / abs(float(ref)) + 1e-14
            elif name == "t" and v < 10:
                tol = 5e-9
            else:
                tol = 1e-14
            rel = abs(got[name][i].item() - float(ref)) / abs(float(ref))
            assert rel < tol, (name, v, rel)


# ---------------------------------------------------------------- against torch.distributions
@pytest.mark.parametrize("shape", [(2,), (4, 7), (2, 3, 5)])
def test_entropy_matches_torch_distributions(shape):
    alphas = _alphas(*shape, seed=1)
    # torch's textbook formula is exact to ~1e-14 here (alpha_0 < 400): 1e-11 is a tight bound
    torch.testing.assert_close(dirichlet_entropy(alphas), Dirichlet(alphas).entropy(), rtol=1e-11, atol=1e-11)


def test_log_prob_matches_torch_distributions():
    alphas = _alphas(6, 5, seed=2)
    gen = torch.Generator().manual_seed(3)
    log_probs = torch.log_softmax(torch.randn(6, 5, generator=gen, dtype=F64) * 2, -1)
    want = Dirichlet(alphas).log_prob(log_probs.exp())
    torch.testing.assert_close(dirichlet_log_prob(log_probs, alphas), want, rtol=1e-11, atol=1e-11)


def test_log_prob_is_exact_for_probabilities_that_underflow():
    """ln pi = -800 (pi = 0 in float64): the log-space input keeps the density finite and exact."""
    alphas = torch.tensor([2.0, 3.0, 1.5], dtype=F64)
    log_probs = torch.tensor([-800.0, 0.0, -900.0], dtype=F64)
    want = (alphas - 1) @ log_probs - (torch.lgamma(alphas).sum() - torch.lgamma(alphas.sum()))
    torch.testing.assert_close(dirichlet_log_prob(log_probs, alphas), want, rtol=1e-14, atol=0)
    # alpha_k = 1 makes the class irrelevant, even for ln pi_k = -inf
    alphas_one = torch.tensor([1.0, 3.0], dtype=F64)
    assert torch.isfinite(dirichlet_log_prob(torch.tensor([-math.inf, 0.0], dtype=F64), alphas_one))


def test_log_beta_matches_lgamma():
    alphas = _alphas(5, 6, seed=4)
    want = torch.lgamma(alphas).sum(-1) - torch.lgamma(alphas.sum(-1))
    torch.testing.assert_close(dirichlet_log_beta(alphas), want, rtol=1e-12, atol=1e-12)


def test_kl_matches_torch_distributions_and_is_zero_on_the_diagonal():
    a, b = _alphas(4, 6, seed=5), _alphas(4, 6, seed=6)
    torch.testing.assert_close(dirichlet_kl(a, b), kl_divergence(Dirichlet(a), Dirichlet(b)), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(dirichlet_kl(a, a), torch.zeros(4, dtype=F64), rtol=0, atol=1e-12)
    # broadcasting over leading dims
    assert dirichlet_kl(a[:1], b).shape == (4,)


@pytest.mark.parametrize("scale", [1e12, 1e25])
def test_entropy_kl_log_prob_at_huge_precision_against_mpmath(scale):
    """alpha_0 ~ 1e12..1e25 (agreeing teachers / large student logits): the Stirling forms must keep
    float64 accuracy, i.e. ~1e-16 relative to the O(K ln alpha_0) terms they sum."""
    a = _alphas(4, low=0.5, high=5.0, seed=7) * scale
    b = _alphas(4, low=0.5, high=5.0, seed=8) * scale
    a_mp, b_mp = _mp(a), _mp(b)
    log_probs = torch.log_softmax(torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=F64), -1)
    cases = {
        "entropy": (dirichlet_entropy(a), _mp_entropy(a_mp)),
        "kl": (dirichlet_kl(a, b), _mp_kl(a_mp, b_mp)),
        "log_beta": (dirichlet_log_beta(a), _mp_log_beta(a_mp)),
        "log_prob": (dirichlet_log_prob(log_probs, a),
                     sum((x - 1) * mpmath.mpf(lp) for x, lp in zip(a_mp, log_probs.tolist())) - _mp_log_beta(a_mp)),
    }
    for name, (got, ref) in cases.items():
        rel = abs(got.item() - float(ref)) / abs(float(ref))
        assert rel < 1e-13, (name, got.item(), float(ref), rel)
    # and torch.distributions' textbook entropy is visibly wrong there (the reason for the Stirling form)
    textbook = Dirichlet(a).entropy().item()
    ours, exact = cases["entropy"][0].item(), float(cases["entropy"][1])
    assert abs(textbook - exact) > 1e3 * abs(ours - exact)


# ---------------------------------------------------------------- uncertainty measures
@pytest.mark.parametrize("alphas", [[0.7, 1.5, 3.0, 6.0], [4.0, 0.6, 0.9, 20.0]])
def test_uncertainty_matches_monte_carlo(alphas):
    """E[H[pi]], MI and MKL from 200k Dirichlet samples. Tolerance: 5 standard errors of the sample mean
    (estimated from the same samples), i.e. a chance failure probability < 1e-6 for a correct formula."""
    alpha = torch.tensor(alphas, dtype=F64)
    torch.manual_seed(0)
    samples = Dirichlet(alpha).sample((200_000,)).clamp(min=1e-300)  # [S, K]
    log_pi = samples.log()
    mu = alpha / alpha.sum()
    entropy = -(samples * log_pi).sum(-1)  # [S], H[pi]
    kl_mu_pi = (mu * (mu.log() - log_pi)).sum(-1)  # [S], KL(mu || pi)
    got = dirichlet_uncertainty(alpha)
    n = samples.shape[0]
    for name, draws in (("expected_entropy", entropy), ("mkl", kl_mu_pi)):
        tol = 5 * draws.std().item() / math.sqrt(n)
        assert abs(got[name].item() - draws.mean().item()) < tol, name
    mi_tol = 5 * entropy.std().item() / math.sqrt(n)
    assert abs(got["mutual_information"].item() - (-(mu * mu.log()).sum() - entropy.mean()).item()) < mi_tol


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e12, 1e30])
def test_uncertainty_against_mpmath(scale):
    """All five closed forms at tiny, moderate and huge precision: 1e-12 relative, because MI and MKL are
    sums of non-negative terms without cancellation even at alpha_0 = 1e30 (textbook digamma differences
    would lose ~16 digits there). Plus 1e-15 absolute: at alpha_0 ~ 1e-6 the expected entropy (~4e-6) is
    H[mu] - MI, two O(1) numbers, so only its absolute error is at round-off level."""
    a = _alphas(5, low=0.3, high=3.0, seed=9) * scale
    got = dirichlet_uncertainty(a)
    want = _mp_uncertainty(_mp(a))
    for key in UNCERTAINTY_KEYS:
        err = abs(got[key].item() - float(want[key]))
        assert err < 1e-12 * abs(float(want[key])) + 1e-15, (key, scale, got[key].item(), float(want[key]))


def test_epkl_is_mi_plus_mkl_and_measures_are_nonnegative():
    """EPKL = (K-1)/alpha_0 is computed independently of MI and MKL, so the identity is a real check."""
    a = torch.cat([_alphas(50, 6, low=1e-4, high=1e4, seed=10), _alphas(50, 6, low=1e6, high=1e12, seed=11)])
    u = dirichlet_uncertainty(a)
    torch.testing.assert_close(u["epkl"], (6 - 1) / a.sum(-1), rtol=1e-15, atol=0)
    torch.testing.assert_close(u["mutual_information"] + u["mkl"], u["epkl"], rtol=1e-12, atol=0)
    eoe = u["expected_entropy"] + u["mutual_information"]
    torch.testing.assert_close(eoe, u["entropy_of_expected"], rtol=1e-12, atol=1e-300)
    for key in UNCERTAINTY_KEYS:
        assert (u[key] >= 0).all(), key
    assert (u["mutual_information"] > 0).all()


@pytest.mark.parametrize("scale", [1e4, 1e8, 1e12])
def test_mutual_information_vanishes_like_half_epkl(scale):
    """MI and MKL -> (K-1)/(2 alpha_0) as the precision grows (psi(x) = ln x - 1/(2x) + O(x^-2)). The
    relative correction is O(1/(6 min alpha)) <= 1e-3 at scale 1e4; at 1e12 the textbook digamma
    differences would be ~1e-2 off, so this also pins the accuracy."""
    base = _alphas(8, low=0.5, high=2.0, seed=12)
    a = base * scale
    u = dirichlet_uncertainty(a)
    half_epkl = 7 / (2 * a.sum())
    tol = 1.0 / (6 * a.min().item()) + 1e-12
    assert abs(u["mutual_information"].item() / half_epkl.item() - 1) < tol
    assert abs(u["mkl"].item() / half_epkl.item() - 1) < tol
    assert u["mutual_information"].item() < 10 / scale


def test_authors_mutual_information_sign_is_negated():
    """Reference section 14: the authors compute sum mu (ln mu - psi(alpha+1) + psi(alpha_0+1)) with
    mu = alpha/alpha_0. That is exactly -MI <= 0, so their clamp(min=0) always reports 0."""
    a = _alphas(10, 7, seed=13)
    a0 = a.sum(-1, keepdim=True)
    mu = a / a0
    authors = (mu * (mu.log() - torch.digamma(a + 1) + torch.digamma(a0 + 1))).sum(-1)
    mi = dirichlet_uncertainty(a)["mutual_information"]
    torch.testing.assert_close(authors, -mi, rtol=1e-10, atol=1e-12)
    assert (mi > 0).all() and (authors.clamp(min=0) == 0).all()


def test_uncertainty_output_dtype():
    a = _alphas(3, 4)
    assert all(v.dtype == F64 for v in dirichlet_uncertainty(a).values())
    u32 = dirichlet_uncertainty(a.float())
    assert all(v.dtype == torch.float32 for v in u32.values())
    assert all(v.shape == (3,) for v in u32.values())


# ---------------------------------------------------------------- parametrisation
def test_concentrations_values_offsets_and_gradient():
    z = torch.tensor([[-3.0, 0.0, 2.5], [1.0, -1.0, 0.5]], dtype=torch.float32, requires_grad=True)
    for offset in (1.0, 0.5, 0.0):
        alphas = dirichlet_concentrations(z, model_offset=offset)
        assert alphas.dtype == F64
        torch.testing.assert_close(alphas, z.detach().double().exp() + offset, rtol=1e-15, atol=0)
    alphas.sum().backward()
    torch.testing.assert_close(z.grad, z.detach().exp(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_concentrations_stay_finite_for_extreme_logits(dtype):
    k = 40000
    z = torch.zeros(2, k)
    z[0, :] = 1e4  # every class huge: alpha_0 would overflow without the clamp
    z[1, 0], z[1, 1], z[1, 2] = math.inf, -math.inf, -1e4
    for offset in (1.0, 0.0):
        alphas = dirichlet_concentrations(z, model_offset=offset, dtype=dtype)
        assert torch.isfinite(alphas.sum(-1)).all() and (alphas > 0).all()
        assert torch.isfinite(torch.polygamma(1, alphas)).all()  # trigamma ~ 1/alpha^2 still finite
    lo, hi = concentration_bounds(k, dtype)
    assert math.exp(hi) * 2 * k <= torch.finfo(dtype).max * 1.0001 and lo < -43


def test_errors():
    with pytest.raises(ValueError, match="model_offset must be a finite number >= 0, got -0.5"):
        dirichlet_concentrations(torch.zeros(3), model_offset=-0.5)
    with pytest.raises(ValueError, match="model_offset"):
        dirichlet_concentrations(torch.zeros(3), model_offset=math.nan)
    with pytest.raises(ValueError, match="K = 3, alphas_q has K = 4"):
        dirichlet_kl(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="K = 3, alphas has K = 2"):
        dirichlet_log_prob(torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match="floating"):
        dirichlet_entropy(torch.ones(3, dtype=torch.long))
