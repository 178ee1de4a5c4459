"""The losses on top-k statistics (a teacher cache): the closed-form tail against brute force on the densified
distribution, exactness when nothing is dropped, and EnD^2's refusal."""
import math

import pytest
import torch

from proxy_end2.losses import (
    dirichlet_nll_loss_from_stats,
    ensemble_kl_loss_from_stats,
    proxy_dirichlet_loss_from_stats,
    proxy_dirichlet_loss_from_target,
)
from proxy_end2.uncertainty import (
    EnsembleStatistics,
    _numerics,
    ensemble_statistics,
    proxy_target_precision,
    topk_statistics,
)

K = 60


def _case(seed=0, shape=(5, 3), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    stats = ensemble_statistics(3.0 * torch.randn(*shape, 3, K, generator=g, dtype=dtype))
    z = (2.0 * torch.randn(*shape, K, generator=g, dtype=dtype)).requires_grad_(True)
    return stats, z


def _value_and_grad(fn, z):
    value = fn(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


@pytest.mark.parametrize("k", [1, 8, 59])
@pytest.mark.parametrize("precision", ["mkl", "epkl"])
def test_proxy_loss_from_top_k_is_the_loss_of_the_densified_target(k, precision):
    # what "the tail spread evenly" means: the proxy loss of p~ (top-k + uniform tail) with the exact precision
    stats, z = _case()
    top = topk_statistics(stats, k)
    dense = top.dense_log_mean_probs().view(*top.leading_shape, K)
    precision_b = proxy_target_precision(top, precision=precision)
    torch.testing.assert_close(precision_b, proxy_target_precision(stats, precision=precision))  # B is exact
    got = _value_and_grad(lambda x: proxy_dirichlet_loss_from_stats(x, top, precision=precision), z)
    want = _value_and_grad(lambda x: proxy_dirichlet_loss_from_target(x, dense, precision_b), z)
    torch.testing.assert_close(got[0], want[0], rtol=1e-13, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("k", [1, 8, 59, K])
def test_kl_closed_form_equals_brute_force_on_the_densified_target(k):
    stats, z = _case(seed=1)
    top = topk_statistics(stats, k)
    dense = top.dense_log_mean_probs().view(*top.leading_shape, K)

    def brute(x):  # KL(p~ || softmax(x)) over all K classes, 0 ln 0 = 0
        log_q = torch.log_softmax(x, -1)
        terms = torch.where(dense > -math.inf, dense.exp() * (dense - log_q), torch.zeros_like(log_q))
        return terms.sum(-1)

    got = _value_and_grad(lambda x: ensemble_kl_loss_from_stats(x, top), z)
    want = _value_and_grad(brute, z)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-14)


def test_without_a_tail_the_losses_are_exact():
    stats, z = _case(seed=2)
    top = topk_statistics(stats, K)
    for fn in (proxy_dirichlet_loss_from_stats, ensemble_kl_loss_from_stats):
        got, want = _value_and_grad(lambda x: fn(x, top), z), _value_and_grad(lambda x: fn(x, stats), z)
        torch.testing.assert_close(got[0], want[0], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-14)


def test_an_even_tail_is_represented_exactly():
    # an ensemble whose mean puts the same probability on all but 4 classes loses nothing at k = 4
    log_mean = torch.full((6, K), math.log(0.2 / (K - 4)), dtype=torch.float64)
    log_mean[:, :4] = torch.log(torch.tensor([0.4, 0.2, 0.1, 0.1], dtype=torch.float64))
    mean_log = log_mean - 0.05 * torch.rand(6, K, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    stats = EnsembleStatistics(log_mean, mean_log, torch.full((6,), 2.0, dtype=torch.float64), num_members=3)
    top = topk_statistics(stats, 4)
    z = torch.randn(6, K, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    for fn in (proxy_dirichlet_loss_from_stats, ensemble_kl_loss_from_stats):
        got, want = _value_and_grad(lambda x: fn(x, top), z), _value_and_grad(lambda x: fn(x, stats), z)
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-13)


def test_densified_proxy_loss_does_not_depend_on_the_chunking(monkeypatch):
    stats, z = _case(seed=5, shape=(17,))
    top = topk_statistics(stats, 6)
    whole = _value_and_grad(lambda x: proxy_dirichlet_loss_from_stats(x, top), z)
    monkeypatch.setattr(_numerics, "CHUNK_ELEMENTS", 3 * K)  # chunks of 3 rows
    chunked = _value_and_grad(lambda x: proxy_dirichlet_loss_from_stats(x, top), z)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_float32_student_logits_get_float32_gradients_from_the_cache():
    stats, z = _case(seed=6, dtype=torch.float32)
    top = topk_statistics(stats, 8)
    for fn in (proxy_dirichlet_loss_from_stats, ensemble_kl_loss_from_stats):
        _, grad = _value_and_grad(lambda x: fn(x, top), z)
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all()


def test_end2_refuses_top_k_statistics():
    stats, z = _case()
    with pytest.raises(ValueError, match="EnD\\^2 .*top-k statistics"):
        dirichlet_nll_loss_from_stats(z, topk_statistics(stats, 8))
