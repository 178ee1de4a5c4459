"""Ensemble statistics and uncertainty measures (proxy_end2.uncertainty.ensemble).

Oracles: an independent numpy float64 brute force with explicit loops over members and member pairs,
closed-form fixtures, identities between differently defined quantities, invariances.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proxy_end2.uncertainty import (
    UNCERTAINTY_KEYS,
    EnsembleStatistics,
    EnsembleStatisticsAccumulator,
    ensemble_statistics,
    ensemble_uncertainty,
)

# float64 round-off on sums of at most ~10 O(1) terms is ~1e-15; 1e-12 leaves margin but would catch any
# formula error (those are O(1e-2) or larger on random logits).
F64_TOL = dict(rtol=1e-12, atol=1e-12)


def _brute_force(member_logits: np.ndarray) -> dict[str, float]:
    """Textbook definitions for ONE position, member_logits [M, K], numpy float64, explicit loops."""
    m_count, k_count = member_logits.shape
    probs = []
    for m in range(m_count):
        shifted = member_logits[m] - member_logits[m].max()
        probs.append(np.exp(shifted) / np.exp(shifted).sum())
    mean = sum(probs) / m_count

    def entropy(p):
        return -sum(p[k] * math.log(p[k]) for k in range(k_count) if p[k] > 0)

    def kl(p, q):
        if any(p[k] > 0 and q[k] == 0 for k in range(k_count)):
            return math.inf
        return sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(k_count) if p[k] > 0)

    expected_entropy = sum(entropy(p) for p in probs) / m_count
    return {
        "entropy_of_expected": entropy(mean),
        "expected_entropy": expected_entropy,
        # MI defined as the mean KL to the mean (not as EoE - ExE, which is what the code does)
        "mutual_information": sum(kl(p, mean) for p in probs) / m_count,
        "epkl": sum(kl(p, q) for p in probs for q in probs) / m_count**2,
        "mkl": sum(kl(mean, p) for p in probs) / m_count,
    }


def _brute_force_batched(member_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Apply _brute_force at every leading position of a [..., M, K] tensor."""
    lead = member_logits.shape[:-2]
    flat = member_logits.reshape(-1, *member_logits.shape[-2:]).numpy()
    rows = [_brute_force(flat[i]) for i in range(flat.shape[0])]
    return {key: torch.tensor([r[key] for r in rows], dtype=torch.float64).reshape(lead) for key in UNCERTAINTY_KEYS}


def _random_logits(*shape: int, scale: float = 2.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)], ids=["[M,K]", "[B,M,K]", "[B,T,M,K]"])
def test_matches_brute_force(lead):
    logits = _random_logits(*lead, 4, 7, seed=1)
    got = ensemble_uncertainty(logits)
    want = _brute_force_batched(logits)
    assert tuple(got) == UNCERTAINTY_KEYS
    for key in UNCERTAINTY_KEYS:
        assert got[key].shape == lead and got[key].dtype == torch.float64
        torch.testing.assert_close(got[key], want[key], **F64_TOL, msg=key)


def test_identities_against_independent_definitions():
    """EoE = ExE + MI and EPKL = MI + MKL, with MI = mean_m KL(p_m || pbar) and EPKL = pairwise KLs."""
    logits = _random_logits(5, 6, 9, scale=3.0, seed=2)
    got = ensemble_uncertainty(logits)
    ref = _brute_force_batched(logits)
    eoe = ref["expected_entropy"] + ref["mutual_information"]
    torch.testing.assert_close(got["entropy_of_expected"], eoe, **F64_TOL)
    torch.testing.assert_close(got["epkl"], ref["mutual_information"] + ref["mkl"], **F64_TOL)
    assert (got["epkl"] >= got["mkl"]).all() and (got["mutual_information"] >= 0).all()


def test_identical_members_have_no_knowledge_uncertainty():
    one = _random_logits(3, 1, 11, seed=3)
    stats = ensemble_statistics(one.expand(3, 5, 11))
    u = stats.uncertainty()
    # float64: ln pbar = logaddexp of identical values - ln M is exact to ~1e-16 * |ln p|
    for key in ("mutual_information", "epkl", "mkl"):
        torch.testing.assert_close(u[key], torch.zeros(3, dtype=torch.float64), atol=1e-13, rtol=0, msg=key)
    torch.testing.assert_close(u["entropy_of_expected"], u["expected_entropy"], **F64_TOL)


@pytest.mark.parametrize("num_members", [3, 5, 7, 16])
def test_identical_members_float32_round_off_floor(num_members):
    """float32 statistics store ln pbar and mean ln p separately, each rounded to ~2^-24 |ln p_k| and
    accumulated over M members, so MKL of identical members is not 0 but bounded by the documented floor
    2^-24 * M * (H[pbar] + 1) (measured: at most 1/4 of it for M <= 16, K = 40000); float64 removes it."""
    one = _random_logits(4, 1, 40000, scale=3.0, seed=4, dtype=torch.float32)
    stats = ensemble_statistics(one.expand(4, num_members, 40000))
    assert stats.log_mean_probs.dtype == torch.float32
    floor = 2.0**-24 * num_members * (stats.entropy_of_expected() + 1)
    assert (stats.mkl() <= floor).all()
    stats64 = ensemble_statistics(one.double().expand(4, num_members, 40000))
    assert (stats64.mkl() < 1e-13).all()


@pytest.mark.parametrize("num_members", [2, 3, 5])
def test_confident_disagreeing_members_closed_form(num_members):
    """Member m puts logit 30 on class m (K = M): MI -> ln M, ExE -> 0, MKL has a closed form."""
    big = 30.0
    logits = big * torch.eye(num_members, dtype=torch.float64)  # [M, K=M]
    u = ensemble_uncertainty(logits)
    log_norm = math.log(math.exp(big) + num_members - 1)
    log_p_own, log_p_other = big - log_norm, -log_norm
    p_own, p_other = math.exp(log_p_own), math.exp(log_p_other)
    entropy_member = -(p_own * log_p_own + (num_members - 1) * p_other * log_p_other)
    mean_log = (log_p_own + (num_members - 1) * log_p_other) / num_members  # same for every class
    mkl = math.log(1.0 / num_members) - mean_log  # pbar is exactly uniform by symmetry
    torch.testing.assert_close(u["expected_entropy"], torch.tensor(entropy_member, dtype=torch.float64), **F64_TOL)
    mi = math.log(num_members) - entropy_member
    torch.testing.assert_close(u["mutual_information"], torch.tensor(mi, dtype=torch.float64), **F64_TOL)
    torch.testing.assert_close(u["mkl"], torch.tensor(mkl, dtype=torch.float64), **F64_TOL)
    # and the qualitative limit: within e^-30 * 30 of ln M
    assert abs(u["mutual_information"].item() - math.log(num_members)) < 1e-10


def test_single_member_has_zero_knowledge_uncertainty():
    logits = _random_logits(2, 3, 1, 8, seed=5)
    u = ensemble_uncertainty(logits)
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    for key in ("mutual_information", "epkl", "mkl"):
        torch.testing.assert_close(u[key], zeros, atol=1e-15, rtol=0, msg=key)
    torch.testing.assert_close(u["entropy_of_expected"], u["expected_entropy"], **F64_TOL)


def test_permutation_invariance_over_members_and_classes():
    logits = _random_logits(3, 5, 9, seed=6)
    base = ensemble_uncertainty(logits)
    gen = torch.Generator().manual_seed(0)
    by_members = ensemble_uncertainty(logits[:, torch.randperm(5, generator=gen)])
    by_classes = ensemble_uncertainty(logits[..., torch.randperm(9, generator=gen)])
    for key in UNCERTAINTY_KEYS:
        torch.testing.assert_close(by_members[key], base[key], **F64_TOL, msg=key)
        torch.testing.assert_close(by_classes[key], base[key], **F64_TOL, msg=key)


def test_streaming_accumulator_equals_stacked_and_prefixes():
    """Members fed one at a time (separate, non-contiguous tensors); finalize() after each member must equal
    the statistics of the stacked prefix; the final one equals the brute force."""
    logits = _random_logits(6, 2, 4, 5, seed=7)  # [M, B, T, K]: members on dim 0, so slices are separate
    acc = EnsembleStatisticsAccumulator(dtype=torch.float64)
    for m in range(6):
        acc.add(logits[m].transpose(0, 1).transpose(0, 1))  # non-contiguous view
        assert acc.num_members == m + 1
        streamed = acc.finalize()
        stacked = ensemble_statistics(logits[: m + 1].permute(1, 2, 0, 3))  # [B, T, m+1, K]
        torch.testing.assert_close(streamed.log_mean_probs, stacked.log_mean_probs, **F64_TOL)
        torch.testing.assert_close(streamed.mean_log_probs, stacked.mean_log_probs, **F64_TOL)
        torch.testing.assert_close(streamed.expected_entropy, stacked.expected_entropy, **F64_TOL)
    ref = _brute_force_batched(logits.permute(1, 2, 0, 3))
    for key, value in streamed.uncertainty().items():
        torch.testing.assert_close(value, ref[key], **F64_TOL, msg=key)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_members_give_float32_statistics(half):
    logits = _random_logits(3, 4, 50, scale=4.0, seed=8, dtype=half)
    stats = ensemble_statistics(logits)
    want = ensemble_statistics(logits.float())  # upcast first: identical result by design
    assert stats.log_mean_probs.dtype == torch.float32 and stats.expected_entropy.dtype == torch.float32
    for key, value in stats.uncertainty().items():
        assert torch.isfinite(value).all(), key
        torch.testing.assert_close(value, want.uncertainty()[key], rtol=0, atol=0, msg=key)


def test_default_dtype_rule_and_explicit_dtype():
    x32 = _random_logits(2, 3, 4, dtype=torch.float32)
    assert ensemble_statistics(x32).log_mean_probs.dtype == torch.float32
    assert ensemble_statistics(x32.double()).log_mean_probs.dtype == torch.float64
    assert ensemble_statistics(x32, dtype=torch.float64).mean_log_probs.dtype == torch.float64


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)], ids=["[K]", "[B,K]", "[B,T,K]"])
def test_large_vocabulary_confident_members_are_finite(lead):
    """K = 40000, near one-hot members (logit spread ~30 plus -1e4 outliers), float32 and fp16."""
    k = 40000
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(*lead, 4, k, generator=gen)
    logits[..., 0, 7] += 30.0
    logits[..., 1:, 123] += 30.0  # members disagree on the top class
    logits[..., 17] = -1e4  # probability underflows to exactly 0 in float32
    for dtype in (torch.float32, torch.float16):
        u = ensemble_uncertainty(logits.to(dtype))
        for key, value in u.items():
            assert value.shape == lead and value.dtype == torch.float32
            assert torch.isfinite(value).all(), (dtype, key)
            assert (value >= 0).all(), (dtype, key)
        # two of four members on different classes: MI close to H[(1/4, 3/4)] = 0.5623
        assert torch.allclose(u["mutual_information"], torch.tensor(0.5623), atol=0.01)


def test_class_ruled_out_by_every_member_contributes_nothing():
    """A -inf logit in every member (pbar_k = 0, ln p = -inf): no NaN, same as dropping the class."""
    logits = _random_logits(3, 4, 6, seed=10)
    with_dead = torch.cat([logits, torch.full((3, 4, 1), -math.inf, dtype=torch.float64)], dim=-1)
    got, want = ensemble_uncertainty(with_dead), ensemble_uncertainty(logits)
    for key in UNCERTAINTY_KEYS:
        torch.testing.assert_close(got[key], want[key], **F64_TOL, msg=key)


def test_zero_probability_in_one_member_gives_infinite_mkl_only():
    """KL(pbar || p_m) is genuinely infinite when p_mk = 0 < pbar_k; MI stays finite (documented)."""
    logits = _random_logits(4, 5, seed=11)
    logits[0, 2] = -math.inf
    u = ensemble_uncertainty(logits)
    assert math.isinf(u["mkl"].item()) and math.isinf(u["epkl"].item())
    for key in ("entropy_of_expected", "expected_entropy", "mutual_information"):
        assert math.isfinite(u[key].item()), key
    mi = _brute_force(logits.numpy())["mutual_information"]
    torch.testing.assert_close(u["mutual_information"], torch.tensor(mi, dtype=torch.float64), **F64_TOL)


def test_select_drops_positions():
    logits = _random_logits(2, 5, 3, 6, seed=12)  # [B, T, M, K]
    mask = torch.tensor([[True, False, True, True, False], [False, True, True, False, True]])
    selected = ensemble_statistics(logits).select(mask)
    want = ensemble_statistics(logits[mask])  # [N, M, K]
    assert selected.log_mean_probs.shape == (6, 6) and selected.num_members == 3
    for key, value in selected.uncertainty().items():
        torch.testing.assert_close(value, want.uncertainty()[key], **F64_TOL, msg=key)


def test_log_probs_and_logits_give_the_same_measures():
    logits = _random_logits(2, 4, 7, seed=13)
    from_logits = ensemble_uncertainty(logits)
    from_log_probs = ensemble_uncertainty(torch.log_softmax(logits, -1) + 0.0)
    for key in UNCERTAINTY_KEYS:
        torch.testing.assert_close(from_log_probs[key], from_logits[key], **F64_TOL, msg=key)


def test_properties():
    stats = ensemble_statistics(_random_logits(2, 3, 4, 5))
    assert stats.num_classes == 5 and stats.num_members == 4 and stats.leading_shape == (2, 3)
    torch.testing.assert_close(stats.mean_probs().sum(-1), torch.ones(2, 3, dtype=torch.float64), **F64_TOL)


def test_errors():
    acc = EnsembleStatisticsAccumulator()
    with pytest.raises(ValueError, match="no member"):
        acc.finalize()
    acc.add(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"shape \(5,\), expected \(2, 5\)"):
        acc.add(torch.zeros(5))  # would broadcast silently
    with pytest.raises(ValueError, match="floating"):
        acc.add(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="M >= 1"):
        ensemble_statistics(torch.zeros(3, 0, 5))
    with pytest.raises(ValueError, match=r"\[\.\.\., M, K\]"):
        ensemble_statistics(torch.zeros(5))
    with pytest.raises(ValueError, match="floating"):
        EnsembleStatisticsAccumulator(dtype=torch.int64)
    with pytest.raises(ValueError, match="num_members must be >= 1"):
        EnsembleStatistics(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), num_members=0)
    with pytest.raises(ValueError, match="expected_entropy shape"):
        EnsembleStatistics(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), num_members=1)
    stats = ensemble_statistics(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"mask shape \(6,\) != leading shape \(2, 3\)"):
        stats.select(torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        stats.select(torch.ones(2, 3))


def test_brute_force_reference_is_not_vacuous():
    """Guard the oracle itself: disagreeing members must give MI > 0 and EPKL > MKL > 0, so that the
    comparisons above are not between zeros."""
    ref = _brute_force(_random_logits(3, 4, seed=14).numpy())
    assert ref["mutual_information"] > 1e-3 and ref["epkl"] > ref["mkl"] > 1e-3


# ====================================================================== memory-lean paths (in place, chunked, cached)
def _members(num_members=4, lead=(3, 5), k=64, seed=20, dtype=torch.float32):
    return [_random_logits(*lead, k, scale=3.0, seed=seed + m, dtype=dtype) for m in range(num_members)]


def _accumulate(members, dtype=torch.float32, requires_grad=False):
    acc = EnsembleStatisticsAccumulator(dtype=dtype)
    for member in members:
        acc.add(member.detach().clone().requires_grad_(requires_grad))
    return acc.finalize()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_elements", [1, 130, None])
def test_in_place_accumulator_equals_out_of_place_bit_for_bit(monkeypatch, dtype, chunk_elements):
    """no_grad members take the in-place row-chunked path, grad-requiring ones the whole-tensor autograd path:
    identical statistics (chunks of 1 row, 2 rows, and the default). K = 64 keeps every row chunk aligned
    with torch's SIMD loops; otherwise the elements at the end of a chunk go through the scalar tail loop,
    whose exp/log can differ from the vectorised ones in the last bit."""
    import proxy_end2.uncertainty._numerics as numerics

    members = _members(dtype=dtype)
    want = _accumulate(members, dtype, requires_grad=True)  # out of place
    assert want.log_mean_probs.requires_grad
    monkeypatch.setattr(numerics, "CHUNK_ELEMENTS", chunk_elements)
    with torch.no_grad():
        got = _accumulate(members, dtype)
    for name in ("log_mean_probs", "mean_log_probs", "expected_entropy"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name).detach(), rtol=0, atol=0, msg=name)


def test_accumulator_never_writes_to_or_aliases_caller_tensors():
    """The first member's tensor (already log-probabilities, so log_softmax is the identity on it), later
    members and earlier finalize() results stay untouched by later add() calls."""
    members = [torch.log_softmax(m, -1) for m in _members()]
    copies = [m.clone() for m in members]
    acc = EnsembleStatisticsAccumulator()
    acc.add(members[0])
    first = acc.finalize()
    first_copy = [first.log_mean_probs.clone(), first.mean_log_probs.clone(), first.expected_entropy.clone()]
    for member in members[1:]:
        acc.add(member)
    final = acc.finalize()
    for member, copy in zip(members, copies):
        torch.testing.assert_close(member, copy, rtol=0, atol=0)
    for value, copy in zip((first.log_mean_probs, first.mean_log_probs, first.expected_entropy), first_copy):
        torch.testing.assert_close(value, copy, rtol=0, atol=0)
    for tensor in (final.log_mean_probs, final.mean_log_probs):
        assert all(tensor.data_ptr() != m.data_ptr() for m in members)
    assert final.log_mean_probs.data_ptr() != final.mean_log_probs.data_ptr()
    # the accumulator keeps working after finalize, also for the in-place updates
    acc.add(members[0])
    torch.testing.assert_close(acc.finalize().mean_log_probs, _accumulate(members + members[:1]).mean_log_probs,
                               rtol=0, atol=0)


def test_accumulator_is_differentiable_and_mixes_paths():
    """With grad-requiring members add() stays differentiable (same gradient as the stacked computation);
    a no_grad member after them, and grad-free members before them, give the same values as one path."""
    members = _members(num_members=3, dtype=torch.float64)
    leaves = [m.clone().requires_grad_() for m in members]
    stats = _accumulate(members, torch.float64)  # all in place
    acc = EnsembleStatisticsAccumulator(dtype=torch.float64)
    acc.add(leaves[0])
    with torch.no_grad():
        acc.add(leaves[1])  # the running sums have a history: out of place, no in-place write on them
    acc.add(leaves[2])
    mixed = acc.finalize()
    torch.testing.assert_close(mixed.mean_log_probs.detach(), stats.mean_log_probs, rtol=0, atol=0)
    mixed.log_mean_probs.sum().backward()
    # as with plain torch ops, the no_grad step cuts the history of the members before it
    assert leaves[2].grad is not None and leaves[0].grad is None and leaves[1].grad is None
    want = torch.autograd.grad(ensemble_statistics(torch.stack(leaves, -2)).log_mean_probs.sum(), leaves[2])[0]
    torch.testing.assert_close(leaves[2].grad, want, **F64_TOL)
    acc = EnsembleStatisticsAccumulator(dtype=torch.float64)
    acc.add(members[0])  # in place
    acc.add(leaves[1])  # then differentiable
    acc.add(members[2])
    late = acc.finalize()
    assert late.mean_log_probs.requires_grad
    torch.testing.assert_close(late.mean_log_probs.detach(), stats.mean_log_probs, rtol=0, atol=0)
    torch.testing.assert_close(late.expected_entropy.detach(), stats.expected_entropy, rtol=0, atol=0)


@pytest.mark.parametrize("chunk_elements", [1, 130, None])
def test_chunked_mkl_and_entropy_equal_the_whole_tensor_formulas(monkeypatch, chunk_elements):
    """Row chunks (1 row, 2 rows, default) give the whole-tensor values bit for bit (K = 64: SIMD-aligned rows)."""
    import proxy_end2.uncertainty._numerics as numerics

    monkeypatch.setattr(numerics, "CHUNK_ELEMENTS", chunk_elements)
    logits = _random_logits(3, 4, 5, 64, seed=21)
    logits[0, 1, :, 3] = -math.inf  # pbar_k = 0 for one class at one position
    stats = ensemble_statistics(logits)
    lm, ml = stats.log_mean_probs, stats.mean_log_probs
    gap = torch.where(lm > -math.inf, (lm - ml).clamp(min=0.0), torch.zeros_like(lm))
    torch.testing.assert_close(stats.mkl(), (lm.exp() * gap).sum(-1), rtol=0, atol=0)
    eoe = -(lm.exp() * lm.clamp(min=torch.finfo(lm.dtype).min)).sum(-1)
    torch.testing.assert_close(stats.entropy_of_expected(), eoe, rtol=0, atol=0)


def test_mkl_and_entropy_are_computed_once_and_returned_as_copies(monkeypatch):
    import proxy_end2.uncertainty.ensemble as ensemble

    calls = []
    real = ensemble._mkl_terms
    monkeypatch.setattr(ensemble, "_mkl_terms", lambda *a: calls.append(1) or real(*a))
    stats = ensemble_statistics(_random_logits(2, 3, 4, 7, seed=22))
    first = stats.mkl()
    first.mul_(0.0)  # the caller owns what it gets
    u = stats.uncertainty()
    assert len(calls) == 1
    torch.testing.assert_close(u["mkl"], _brute_force_batched(_random_logits(2, 3, 4, 7, seed=22))["mkl"], **F64_TOL)
    stats.epkl()
    stats.mutual_information()
    assert len(calls) == 1
    # select keeps the cache (restricted to the kept positions)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.equal(stats.select(mask).mkl(), u["mkl"][mask]) and len(calls) == 1


def test_statistics_with_autograd_history_are_not_cached():
    logits = _random_logits(2, 3, 5, seed=23).requires_grad_()
    stats = ensemble_statistics(logits)
    stats.mkl().sum().backward(retain_graph=True)
    grad = logits.grad.clone()
    logits.grad = None
    stats.mkl().sum().backward()  # a fresh graph, not a cached tensor
    torch.testing.assert_close(logits.grad, grad, rtol=0, atol=0)
    assert "mkl" not in stats.__dict__.get("_cache", {})


def test_select_without_padding_returns_views():
    stats = ensemble_statistics(_random_logits(2, 3, 4, 5, seed=24))
    mkl = stats.mkl()
    selected = stats.select(torch.ones(2, 3, dtype=torch.bool))
    assert selected.log_mean_probs.shape == (6, 5) and selected.expected_entropy.shape == (6,)
    assert selected.log_mean_probs.data_ptr() == stats.log_mean_probs.data_ptr()
    assert selected.mean_log_probs.data_ptr() == stats.mean_log_probs.data_ptr()
    torch.testing.assert_close(selected.mkl(), mkl.reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(selected.uncertainty()["epkl"], stats.uncertainty()["epkl"].reshape(-1), rtol=0, atol=0)


def test_finalize_release_hands_over_the_running_sums_without_a_copy():
    """release=True: the statistics are the accumulator's own buffers (no new [..., K] tensor), with the
    values of the copying finalize; the accumulator is empty afterwards and can start a new ensemble."""
    members = _members(dtype=torch.float32)
    with torch.no_grad():
        acc = EnsembleStatisticsAccumulator()
        for member in members:
            acc.add(member)
        want = acc.finalize()  # copies
        buffers = (acc._log_sum_probs.data_ptr(), acc._sum_log_probs.data_ptr())
        got = acc.finalize(release=True)
    assert (got.log_mean_probs.data_ptr(), got.mean_log_probs.data_ptr()) == buffers
    for name in ("log_mean_probs", "mean_log_probs", "expected_entropy"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0, msg=name)
    assert acc.num_members == 0
    with pytest.raises(ValueError, match="no member"):
        acc.finalize()
    acc.add(members[0])  # a new ensemble
    assert acc.num_members == 1
