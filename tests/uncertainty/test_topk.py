"""Top-k compression of ensemble statistics (proxy_end2.uncertainty.topk): against the full statistics and
brute force in float64."""
import math

import pytest
import torch

from proxy_end2.uncertainty import EnsembleStatistics, ensemble_statistics, topk_statistics
from proxy_end2.uncertainty import _numerics
from proxy_end2.uncertainty.topk import TopKStatistics


def _stats(shape=(3, 4), members=3, k_classes=50, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return ensemble_statistics(scale * torch.randn(*shape, members, k_classes, generator=g, dtype=dtype))


def test_topk_keeps_the_largest_classes_and_the_exact_tail_mass():
    stats = _stats()
    top = topk_statistics(stats, 7)
    assert top.leading_shape == (3, 4) and top.topk == 7 and top.num_classes == 50 and top.num_members == 3
    values, index = torch.topk(stats.log_mean_probs, 7, dim=-1)
    assert torch.equal(top.topk_indices, index) and torch.equal(top.topk_log_probs, values)
    probs = stats.log_mean_probs.exp()
    tail = probs.sum(-1) - probs.gather(-1, index).sum(-1)  # float64 brute force, tail is not small here
    torch.testing.assert_close(top.tail_log_mass.exp(), tail, rtol=1e-12, atol=0)


def test_tiny_tail_mass_keeps_its_relative_precision():
    # one class holds all but 1e-30 of the mass: 1 - sum(top) would be 0 in float32 and float64
    k_classes = 10
    log_p = torch.full((2, k_classes), math.log(1e-30 / (k_classes - 1)))
    log_p[:, 3] = 0.0
    stats = EnsembleStatistics(log_p, log_p.clone(), torch.zeros(2), num_members=1)
    top = topk_statistics(stats, 1)
    torch.testing.assert_close(top.tail_log_mass, torch.full((2,), math.log(1e-30)), rtol=1e-6, atol=0)
    assert torch.equal(top.topk_indices[:, 0], torch.tensor([3, 3]))


def test_scalars_are_those_of_the_full_ensemble():
    stats = _stats(dtype=torch.float32)
    top = topk_statistics(stats, 4)
    full = stats.uncertainty()
    for name, value in top.uncertainty().items():
        torch.testing.assert_close(value, full[name], rtol=1e-6, atol=1e-6, msg=name)
    torch.testing.assert_close(top.mkl(), stats.mkl())
    torch.testing.assert_close(top.epkl(), stats.epkl())


def test_dense_mean_is_the_top_k_plus_an_even_tail():
    stats = _stats()
    top = topk_statistics(stats, 5)
    dense = top.dense_log_mean_probs()  # [12, 50]
    flat = stats.log_mean_probs.reshape(-1, 50)
    index = top.topk_indices.reshape(-1, 5)
    torch.testing.assert_close(dense.exp().sum(-1), torch.ones(12, dtype=torch.float64), rtol=1e-14, atol=0)
    assert torch.equal(dense.gather(-1, index), flat.gather(-1, index))
    others = torch.ones_like(dense, dtype=torch.bool).scatter_(-1, index, False)
    expected_tail = top.tail_log_mass.reshape(-1, 1) - math.log(45)
    assert torch.allclose(dense[others].view(12, 45), expected_tail.expand(12, 45), rtol=0, atol=1e-14)
    torch.testing.assert_close(top.dense_log_mean_probs(slice(3, 5)), dense[3:5])


def test_k_equal_to_k_classes_has_no_tail_and_is_exact():
    stats = _stats()
    top = topk_statistics(stats, 50)
    assert torch.isinf(top.tail_log_mass).all() and (top.tail_log_mass < 0).all()
    torch.testing.assert_close(top.dense_log_mean_probs(), stats.log_mean_probs.reshape(-1, 50), rtol=0, atol=0)


def test_tail_is_computed_on_row_chunks(monkeypatch):
    stats = _stats(shape=(40,))
    whole = topk_statistics(stats, 3)
    monkeypatch.setattr(_numerics, "CHUNK_ELEMENTS", 120)  # 2 rows of 50 classes per chunk
    chunked = topk_statistics(stats, 3)
    assert torch.equal(whole.tail_log_mass, chunked.tail_log_mass)


def test_select_keeps_the_masked_positions():
    top = topk_statistics(_stats(), 3)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 1] = mask[2, 3] = True
    kept = top.select(mask)
    assert kept.leading_shape == (2,)
    assert torch.equal(kept.topk_indices, top.topk_indices[mask])
    assert torch.equal(kept.mkl(), top.mkl_values[mask])
    with pytest.raises(ValueError, match="mask"):
        top.select(torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("k", [0, 51])
def test_bad_k_is_refused(k):
    with pytest.raises(ValueError, match="top-k size"):
        topk_statistics(_stats(), k)


def test_inconsistent_fields_are_refused():
    top = topk_statistics(_stats(), 3)
    fields = dict(topk_indices=top.topk_indices, topk_log_probs=top.topk_log_probs, tail_log_mass=top.tail_log_mass,
                  mkl_values=top.mkl_values, epkl_values=top.epkl_values, expected_entropy=top.expected_entropy,
                  num_classes=50, num_members=3)
    with pytest.raises(ValueError, match="leading shape"):
        TopKStatistics(**dict(fields, mkl_values=top.mkl_values[:1]))
    with pytest.raises(ValueError, match="integer"):
        TopKStatistics(**dict(fields, topk_indices=top.topk_indices.double()))
    with pytest.raises(ValueError, match=r"k = 3 must be in \[1, K = 2\]"):
        TopKStatistics(**dict(fields, num_classes=2))
