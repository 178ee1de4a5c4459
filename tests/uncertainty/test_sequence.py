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
            ep_mkl = sum(sum(pep[k] * (math.log(pep[k]) - math.log(p[m][k])) for k in range(K)) for m in range(M)) / M
            u_ep = -sum(pep[k] * meanlog[k] for k in range(K))
            vals = {
                "token_nll": -math.log(pbar[y]), "token_ep_nll": -math.log(pep[y]),
                "token_data": -sum(math.log(p[m][y]) for m in range(M)) / M,
                "entropy_of_expected": eoe, "expected_entropy": exe, "mutual_information": eoe - exe,
                "epkl": eoe - exe + mkl, "mkl": mkl, "ep_entropy_of_expected": ep_eoe,
                "ep_mutual_information": ep_eoe - exe, "ep_epkl": u_ep - exe, "ep_mkl": ep_mkl,
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
                   ("mutual_information", "ep_mutual_information"), ("token_nll", "token_ep_nll")):
        torch.testing.assert_close(token[pe][:, 0], token[ep][:, 0])
    assert (sequence["pe_knowledge"] >= -1e-12).all() and (sequence["ep_knowledge"] >= -1e-12).all()
    assert (token["ep_mkl"] >= 0).all()


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
            assert token["knowledge_score"][n, t].item() == pytest.approx((log_q[n, t, y] - e_log_pi).item())
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
