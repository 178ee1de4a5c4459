"""Sequence-level measures against brute-force loops over members, positions and classes (float64)."""
import math

import pytest
import torch

from proxy_end2.uncertainty.dirichlet import dirichlet_uncertainty
from proxy_end2.uncertainty.sequence import (
    ENSEMBLE_SEQUENCE_KEYS,
    ENSEMBLE_TOKEN_KEYS,
    EnsembleSequenceAccumulator,
    ensemble_sequence_uncertainty,
    prior_network_sequence_uncertainty,
)

N, L, M, K = 3, 5, 4, 6
PAD = 0


def _case(seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, L, M, K, generator=g, dtype=torch.float64) * scale
    target = torch.randint(1, K, (N, L), generator=g)
    lengths = [5, 3, 1]  # includes a one-token (EOS-only) hypothesis
    mask = torch.zeros(N, L, dtype=torch.bool)
    for n, length in enumerate(lengths):
        mask[n, :length] = True
    target[~mask] = PAD
    return logits, target, mask, lengths


def _entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def _brute_force(logits, target, lengths):
    """Literal transcription of the definitions with Python floats."""
    probs = torch.softmax(logits, -1).tolist()  # N L M K
    out = []
    for n, length in enumerate(lengths):
        prefix = [0.0] * M  # ln P_m(y_<t)
        tok = {k: [] for k in ENSEMBLE_TOKEN_KEYS}
        for t in range(length):
            p = probs[n][t]
            y = target[n, t].item()
            pbar = [sum(p[m][k] for m in range(M)) / M for k in range(K)]
            w = [math.exp(prefix[m]) for m in range(M)]
            w = [x / sum(w) for x in w]
            pep = [sum(w[m] * p[m][k] for m in range(M)) for k in range(K)]
            meanlog = [sum(math.log(p[m][k]) for m in range(M)) / M for k in range(K)]
            exe = sum(_entropy(p[m]) for m in range(M)) / M
            eoe = _entropy(pbar)
            mkl = sum(m_kl for m_kl in (sum(pbar[k] * (math.log(pbar[k]) - math.log(p[m][k])) for k in range(K))
                                        for m in range(M))) / M
            ep_eoe = _entropy(pep)
            kl = lambda a, b: sum(a[k] * (math.log(a[k]) - math.log(b[k])) for k in range(K))  # noqa: E731
            u_ep = -sum(pep[k] * meanlog[k] for k in range(K))
            vals = {
                "token_nll": -math.log(pbar[y]), "token_ep_nll": -math.log(pep[y]),
                "token_data": -sum(math.log(p[m][y]) for m in range(M)) / M,
                "entropy_of_expected": eoe, "expected_entropy": exe, "mutual_information": eoe - exe,
                "epkl": eoe - exe + mkl, "mkl": mkl, "ep_entropy_of_expected": ep_eoe,
                # posterior-weighted expectations over the members
                "ep_expected_entropy": sum(w[m] * _entropy(p[m]) for m in range(M)),
                "ep_mutual_information": sum(w[m] * kl(p[m], pep) for m in range(M)),
                "ep_mkl": sum(w[m] * kl(pep, p[m]) for m in range(M)),
                "ep_epkl": sum(w[m] * w[n2] * kl(p[m], p[n2]) for m in range(M) for n2 in range(M)),
                # the authors' forms: weighted mean, uniform expectations
                "authors_ep_mutual_information": ep_eoe - exe, "authors_ep_epkl": u_ep - exe,
                "authors_ep_mkl": sum(kl(pep, p[m]) for m in range(M)) / M,
            }
            for k, v in vals.items():
                tok[k].append(v)
            for m in range(M):
                prefix[m] += math.log(p[m][y])
        seq_logp = [prefix[m] for m in range(M)]
        log_prob = -sum(tok["token_nll"])
        seq = {
            "log_prob": log_prob, "score": -log_prob / length,
            "ep_total": -math.log(sum(math.exp(v) for v in seq_logp) / M) / length,
            "data": -sum(seq_logp) / M / length,
        }
        seq["pe_knowledge"] = seq["data"] - seq["score"]
        seq["ep_knowledge"] = seq["data"] - seq["ep_total"]
        for k in ENSEMBLE_SEQUENCE_KEYS[6:]:
            seq[k] = sum(tok[k]) / length
        out.append((tok, seq))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_ensemble_measures_match_brute_force(seed):
    logits, target, mask, lengths = _case(seed)
    token, sequence = ensemble_sequence_uncertainty(logits, target, mask)
    for n, (tok, seq) in enumerate(_brute_force(logits, target, lengths)):
        for key in ENSEMBLE_TOKEN_KEYS:
            got = token[key][n, : lengths[n]].tolist()
            assert got == pytest.approx(tok[key], rel=1e-9, abs=1e-12), key
            assert token[key][n, lengths[n]:].abs().sum() == 0  # padding is 0
        for key in ENSEMBLE_SEQUENCE_KEYS:
            assert sequence[key][n].item() == pytest.approx(seq[key], rel=1e-9, abs=1e-12), key


def test_ep_equals_pe_at_first_position_and_knowledge_nonnegative():
    logits, target, mask, _ = _case(3, scale=4.0)
    token, sequence = ensemble_sequence_uncertainty(logits, target, mask)
    for pe, ep in (("entropy_of_expected", "ep_entropy_of_expected"), ("mkl", "ep_mkl"),
                   ("mutual_information", "ep_mutual_information"), ("token_nll", "token_ep_nll"),
                   ("expected_entropy", "ep_expected_entropy"), ("epkl", "ep_epkl"),
                   ("mutual_information", "authors_ep_mutual_information"), ("mkl", "authors_ep_mkl")):
        torch.testing.assert_close(token[pe][:, 0], token[ep][:, 0])
    assert (sequence["pe_knowledge"] >= -1e-12).all() and (sequence["ep_knowledge"] >= -1e-12).all()
    for key in ("ep_mutual_information", "ep_epkl", "ep_mkl", "authors_ep_mkl"):
        assert (token[key] >= 0).all(), key


def test_posterior_weighted_ep_measures_stay_nonnegative_where_the_authors_forms_go_negative():
    """Two members, the first certain of the prefix (weight ~1) and confident now, the second unsure: the
    authors' ep MI = H[p_ep] - uniform ExE = H[p_ep] - ln(K)/2 is about -1.8 nats here; the posterior-weighted
    MI is >= 0 and equals sum_m w_m KL(p_m || p_ep)."""
    k = 50
    confident = torch.full((k,), -30.0, dtype=torch.float64)
    confident[1] = 30.0  # member 1 puts all its mass on token 1
    members = torch.stack([confident, torch.zeros(k, dtype=torch.float64)])  # member 2: uniform
    logits = members.expand(1, 2, 2, k).clone()  # [N=1, L=2, M=2, K]
    target = torch.tensor([[1, 1]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    token, _ = ensemble_sequence_uncertainty(logits, target, mask)
    assert token["authors_ep_mutual_information"][0, 1].item() < -1.5
    assert token["ep_mutual_information"][0, 1].item() >= 0
    assert token["ep_epkl"][0, 1].item() >= token["ep_mkl"][0, 1].item() >= 0
    w = torch.softmax(torch.log_softmax(members, -1)[:, 1], 0)  # posterior of the members after token 1
    p = torch.softmax(members, -1)
    p_ep = (w[:, None] * p).sum(0)
    want = sum(w[m] * (p[m] * (p[m].log() - p_ep.log())).sum() for m in range(2))
    assert token["ep_mutual_information"][0, 1].item() == pytest.approx(want.item(), rel=1e-9, abs=1e-12)


def test_ep_weights_keep_their_precision_on_long_hypotheses():
    """Prefixes of about -2000 nats: the float32 accumulators see only the members' prefix differences, so
    the ep measures match a float64 computation to float32 round-off of O(1) numbers (the weights used to be
    formed from the float32 prefixes themselves: an error of ~5e-4 nats at -2000 nats)."""
    g = torch.Generator().manual_seed(11)
    n, length, m, k = 2, 400, 3, 200
    logits = torch.randn(n, length, m, k, generator=g, dtype=torch.float64)
    target = torch.randint(0, k, (n, length), generator=g)  # random tokens: ~ln(200) = 5.3 nats each
    mask = torch.ones(n, length, dtype=torch.bool)
    token64, seq64 = ensemble_sequence_uncertainty(logits, target, mask)
    acc = EnsembleSequenceAccumulator(target, mask, dtype=torch.float32)
    for member in range(m):
        acc.add(logits[:, :, member].float())
    token32, seq32 = acc.finalize()
    assert seq64["log_prob"].max().item() < -2000
    for key in ("ep_entropy_of_expected", "ep_expected_entropy", "ep_mutual_information", "ep_mkl", "ep_epkl",
                "token_ep_nll"):
        torch.testing.assert_close(token32[key], token64[key], rtol=0, atol=2e-5, msg=key)


def test_streaming_in_float32_matches_float64():
    logits, target, mask, _ = _case(4)
    acc = EnsembleSequenceAccumulator(target, mask, dtype=torch.float32)
    for m in range(M):
        acc.add(logits[:, :, m].float())
    token32, seq32 = acc.finalize()
    token64, seq64 = ensemble_sequence_uncertainty(logits, target, mask)
    for key in ENSEMBLE_SEQUENCE_KEYS:
        torch.testing.assert_close(seq32[key], seq64[key], rtol=1e-4, atol=1e-5)


def test_prior_network_measures():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(N, L, K, generator=g, dtype=torch.float64) * 2
    _, target, mask, lengths = _case(5)
    token, sequence = prior_network_sequence_uncertainty(logits, target, mask, model_offset=1.0)
    alphas = logits.exp() + 1.0
    dir_unc = dirichlet_uncertainty(alphas)
    log_q = torch.log_softmax(logits, -1)
    for n, length in enumerate(lengths):
        for t in range(length):
            y = target[n, t]
            assert token["token_nll"][n, t].item() == pytest.approx(-log_q[n, t, y].item())
            assert token["entropy_of_expected"][n, t].item() == pytest.approx(
                -(log_q[n, t].exp() * log_q[n, t]).sum().item())
            e_log_pi = torch.digamma(alphas[n, t, y]) - torch.digamma(alphas[n, t].sum())
            log_mu_y = torch.log(alphas[n, t, y] / alphas[n, t].sum())
            assert token["knowledge_score"][n, t].item() == pytest.approx((log_mu_y - e_log_pi).item())
            for key in ("expected_entropy", "mutual_information", "epkl", "mkl"):
                assert token[key][n, t].item() == pytest.approx(dir_unc[key][n, t].item())
        assert sequence["log_prob"][n].item() == pytest.approx(log_q[n, :length].gather(
            -1, target[n, :length, None]).sum().item())
        assert sequence["epkl"][n].item() == pytest.approx(dir_unc["epkl"][n, :length].mean().item())


def test_prior_network_huge_precision_has_no_knowledge_uncertainty():
    _, target, mask, _ = _case(6)
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(N, L, K, generator=g, dtype=torch.float64) + 25.0  # alpha_0 ~ 1e11
    _, sequence = prior_network_sequence_uncertainty(logits, target, mask)
    for key in ("mutual_information", "epkl", "mkl"):
        assert (sequence[key] < 1e-8).all(), key
    assert (sequence["knowledge_score"].abs() < 1e-8).all()


def test_shape_errors():
    logits, target, mask, _ = _case(0)
    with pytest.raises(ValueError, match="\\[N, L, M, K\\]"):
        ensemble_sequence_uncertainty(logits[0], target, mask)
    with pytest.raises(ValueError, match="leading shape"):
        prior_network_sequence_uncertainty(logits[:, :, 0], target[:, :2], mask)


def test_prior_network_knowledge_score_is_nonnegative_also_for_unlikely_tokens():
    """ln mu_y - E[ln pi_y] >= 0 by Jensen, also where q_y < 1/K (the old ln q_y - E[ln pi_y] went negative)."""
    k = 40
    logits = torch.zeros(1, 3, k, dtype=torch.float64)
    logits[..., 0] = 8.0  # q_y for y != 0 is far below 1/K
    target = torch.tensor([[5, 6, 0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    token, _ = prior_network_sequence_uncertainty(logits, target, mask)
    log_q = torch.log_softmax(logits, -1)
    assert log_q[0, 0, 5].item() < -math.log(k)
    assert (token["knowledge_score"] >= 0).all()
    assert token["knowledge_score"][0, 0].item() > 0


def test_dirichlet_mean_is_softmax_mixed_with_uniform_by_the_offset():
    """mu = (1 - K c / alpha_0) softmax(z) + (K c / alpha_0) / K: the documented effect of the model offset."""
    g = torch.Generator().manual_seed(12)
    z = torch.randn(7, 30, generator=g, dtype=torch.float64) * 3
    for c in (1.0, 0.5):
        alphas = z.exp() + c
        a0 = alphas.sum(-1, keepdim=True)
        mu = alphas / a0
        tail = 30 * c / a0
        torch.testing.assert_close(mu, (1 - tail) * torch.softmax(z, -1) + tail / 30, rtol=1e-13, atol=0)


def test_temperature_changes_the_decoded_distribution_not_the_dirichlet():
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(N, L, K, generator=g, dtype=torch.float64) * 2
    _, target, mask, _ = _case(13)
    token1, _ = prior_network_sequence_uncertainty(logits, target, mask)
    token2, _ = prior_network_sequence_uncertainty(logits, target, mask, temperature=2.0)
    for key in ("dirichlet_entropy_of_expected", "expected_entropy", "mutual_information", "epkl", "mkl",
                "knowledge_score"):
        torch.testing.assert_close(token1[key], token2[key], rtol=0, atol=0, msg=key)
    log_q2 = torch.log_softmax(logits / 2.0, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token2["token_nll"], torch.where(mask, -log_q2, 0.0))
    assert not torch.allclose(token1["entropy_of_expected"], token2["entropy_of_expected"])
    with pytest.raises(ValueError, match="temperature"):
        prior_network_sequence_uncertainty(logits, target, mask, temperature=0.0)
