r"""Token- and sequence-level uncertainty of autoregressive predictions (Malinin & Gales, ICLR 2021).

Inputs are teacher-forced model outputs on given hypotheses: logits ``[N, L, K]`` (N hypotheses, L target
positions, K classes), the hypothesis tokens ``target [N, L]`` (EOS included) and a mask of the non-pad
positions. Outputs are two dicts: token measures ``[N, L]`` (0 at padding) and sequence measures ``[N]``,
in nats. Pure torch, no fairseq.

**Ensemble** of M ordinary models with member next-token distributions :math:`p_m(\cdot \mid y_{<t})`:

* "pe" (product of expectations): the member mean :math:`\bar p = \frac1M \sum_m p_m` at every step;
  token measures :math:`\mathcal H[\bar p]`, ExE, MI, EPKL, MKL (see :mod:`.ensemble`).
* "ep" (expectation of products): members weighted by the probability they gave the prefix,
  :math:`w_{m,t} = P_m(y_{<t}) / \sum_{m'} P_{m'}(y_{<t})`, :math:`p_{ep} = \sum_m w_{m,t} p_m`
  (so that :math:`\prod_t p_{ep}(y_t) = \frac1M \sum_m P_m(y)`). With
  :math:`U_{ep} = -\sum_k p_{ep,k} \frac1M \sum_m \ln p_{mk}`:
  ``ep_entropy_of_expected`` :math:`= \mathcal H[p_{ep}]`, ``ep_mkl`` :math:`= U_{ep} - \mathcal H[p_{ep}]
  = \frac1M \sum_m \mathrm{KL}(p_{ep} \| p_m) \ge 0`, ``ep_epkl`` :math:`= U_{ep} - \mathrm{ExE}`,
  ``ep_mutual_information`` :math:`= \mathcal H[p_{ep}] - \mathrm{ExE}` (not clamped: with unequal
  weights it can be slightly negative). At :math:`t = 1`, or when all members agree, ep = pe.
* chosen-token measures: ``token_nll`` :math:`= -\ln \bar p(y_t)`, ``token_ep_nll``
  :math:`= -\ln p_{ep}(y_t)`, ``token_data`` :math:`= -\frac1M \sum_m \ln p_m(y_t)`.
* sequence measures (length L includes EOS): ``log_prob`` :math:`= \sum_t \ln \bar p(y_t)`,
  ``score`` :math:`= -\frac1L \sum_t \ln \bar p(y_t)`, ``ep_total`` :math:`= -\frac1L \ln \frac1M
  \sum_m P_m(y)`, ``data`` :math:`= -\frac1L \frac1M \sum_m \ln P_m(y)`, ``pe_knowledge`` = data - score
  :math:`\ge 0`, ``ep_knowledge`` = data - ep_total :math:`\ge 0`, and the means over positions of the nine
  pe/ep token measures.

**Prior Network** with logits z, :math:`\alpha = e^z + c`, :math:`\mu = \alpha / \alpha_0` and
:math:`q = \mathrm{softmax}(z)` (the distribution beam search used): ``token_nll`` :math:`= -\ln q(y_t)`,
``entropy_of_expected`` :math:`= \mathcal H[q]`, the closed-form Dirichlet measures of
:func:`~proxy_end2.uncertainty.dirichlet.dirichlet_uncertainty` (``dirichlet_entropy_of_expected``
:math:`= \mathcal H[\mu]`, ``expected_entropy``, ``mutual_information``, ``epkl``, ``mkl``), and
``knowledge_score`` :math:`= \ln q(y_t) - \mathbb E_{\mathrm{Dir}}[\ln \pi_{y_t}]
= \ln q(y_t) - \psi(\alpha_{y_t}) + \psi(\alpha_0)`, the Prior-Network analogue of the ensemble's
``token_data - token_nll``. Sequence: ``log_prob`` :math:`= \sum_t \ln q(y_t)`, ``score``
:math:`= -\log\_prob / L`, and the means over positions of the token measures.

References:
    Malinin & Gales, "Uncertainty Estimation in Autoregressive Structured Prediction", ICLR 2021,
    https://arxiv.org/abs/2002.07650.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .dirichlet import dirichlet_concentrations, dirichlet_uncertainty
from ._numerics import xlogx_from_log
from .ensemble import EnsembleStatisticsAccumulator

PRIOR_NETWORK_TOKEN_KEYS: tuple[str, ...] = (
    "token_nll", "entropy_of_expected", "dirichlet_entropy_of_expected", "expected_entropy",
    "mutual_information", "epkl", "mkl", "knowledge_score",
)
PRIOR_NETWORK_SEQUENCE_KEYS: tuple[str, ...] = ("log_prob", "score") + PRIOR_NETWORK_TOKEN_KEYS[1:]

_PE_KEYS = ("entropy_of_expected", "expected_entropy", "mutual_information", "epkl", "mkl")
_EP_KEYS = ("ep_entropy_of_expected", "ep_mutual_information", "ep_epkl", "ep_mkl")
ENSEMBLE_TOKEN_KEYS: tuple[str, ...] = ("token_nll", "token_ep_nll", "token_data") + _PE_KEYS + _EP_KEYS
ENSEMBLE_SEQUENCE_KEYS: tuple[str, ...] = (
    ("log_prob", "score", "ep_total", "data", "pe_knowledge", "ep_knowledge") + _PE_KEYS + _EP_KEYS
)


def sequence_measure_names(kind: str) -> tuple[str, ...]:
    """Sequence measure names for ``kind`` in {"prior_network", "ensemble"}, in output order."""
    return {"prior_network": PRIOR_NETWORK_SEQUENCE_KEYS, "ensemble": ENSEMBLE_SEQUENCE_KEYS}[kind]


def token_measure_names(kind: str) -> tuple[str, ...]:
    """Token measure names for ``kind`` in {"prior_network", "ensemble"}, in output order."""
    return {"prior_network": PRIOR_NETWORK_TOKEN_KEYS, "ensemble": ENSEMBLE_TOKEN_KEYS}[kind]


def _check_inputs(logits: Tensor, target: Tensor, mask: Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [N, L, K], got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:2] or mask.shape != logits.shape[:2]:
        raise ValueError(
            f"target {tuple(target.shape)} and mask {tuple(mask.shape)} must have the logits' leading "
            f"shape {tuple(logits.shape[:2])}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")


def _masked_mean(token: Tensor, mask: Tensor) -> Tensor:
    """Mean over the non-pad positions: [N, L] -> [N] (float64)."""
    length = mask.sum(-1).clamp(min=1).to(torch.float64)  # N
    return (token.to(torch.float64) * mask).sum(-1) / length


def prior_network_sequence_uncertainty(
    logits: Tensor, target: Tensor, mask: Tensor, model_offset: float = 1.0
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Token ``[N, L]`` and sequence ``[N]`` measures of a Prior Network's teacher-forced logits.

    Args:
        logits: ``[N, L, K]`` student logits on the hypotheses (any float dtype).
        target: ``[N, L]`` hypothesis tokens (EOS included).
        mask: ``[N, L]`` bool, True at non-pad positions.
        model_offset: ``c`` in ``alpha = exp(z) + c``.

    Returns:
        ``(token, sequence)`` dicts keyed by :data:`PRIOR_NETWORK_TOKEN_KEYS` and
        :data:`PRIOR_NETWORK_SEQUENCE_KEYS`; float64; token values are 0 at padding.
    """
    _check_inputs(logits, target, mask)
    log_q = torch.log_softmax(logits.to(torch.float64), dim=-1)  # N x L x K
    log_q_y = log_q.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # N x L
    alphas = dirichlet_concentrations(logits, model_offset=model_offset, dtype=torch.float64)  # N x L x K
    dirichlet = dirichlet_uncertainty(alphas)  # each N x L
    alpha_y = alphas.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # N x L
    expected_log_pi_y = torch.digamma(alpha_y) - torch.digamma(alphas.sum(-1))  # N x L
    token = {
        "token_nll": -log_q_y,
        "entropy_of_expected": -xlogx_from_log(log_q).sum(-1),
        "dirichlet_entropy_of_expected": dirichlet["entropy_of_expected"],
        "expected_entropy": dirichlet["expected_entropy"],
        "mutual_information": dirichlet["mutual_information"],
        "epkl": dirichlet["epkl"],
        "mkl": dirichlet["mkl"],
        "knowledge_score": log_q_y - expected_log_pi_y,
    }
    token = {name: torch.where(mask, value.to(torch.float64), 0.0) for name, value in token.items()}
    log_prob = (log_q_y * mask).sum(-1)  # N
    sequence = {"log_prob": log_prob, "score": -log_prob / mask.sum(-1).clamp(min=1)}
    sequence.update({name: _masked_mean(token[name], mask) for name in PRIOR_NETWORK_TOKEN_KEYS[1:]})
    return token, sequence


class EnsembleSequenceAccumulator:
    """Streams the members of an ensemble (one ``[N, L, K]`` logit tensor at a time) into the pe/ep measures.

    Memory is O(N * L * K) whatever the number of members: besides the pe statistics of
    :class:`~proxy_end2.uncertainty.EnsembleStatisticsAccumulator` it keeps
    :math:`\\ln \\sum_m P_m(y_{<t}) p_m(\\cdot)` ([N, L, K]), the prefix normaliser ([N, L]) and the members'
    chosen-token log-probabilities ([M, N, L]).
    """

    def __init__(self, target: Tensor, mask: Tensor, dtype: torch.dtype = torch.float32) -> None:
        self.target = target
        self.mask = mask
        self.dtype = dtype
        self._pe = EnsembleStatisticsAccumulator(dtype=dtype)
        self._log_ep_unnorm: Tensor | None = None  # N x L x K: ln sum_m P_m(y_<t) p_m(.)
        self._log_prefix_norm: Tensor | None = None  # N x L: ln sum_m P_m(y_<t)
        self._chosen: list[Tensor] = []  # M x [N x L]: ln p_m(y_t | y_<t), 0 at padding

    def add(self, member_logits: Tensor) -> None:
        """Fold in one member's teacher-forced logits ``[N, L, K]``."""
        _check_inputs(member_logits, self.target, self.mask)
        log_p = torch.log_softmax(member_logits.to(self.dtype), dim=-1)  # N x L x K
        self._pe.add(log_p)
        chosen = log_p.gather(-1, self.target.unsqueeze(-1)).squeeze(-1)  # N x L
        chosen = torch.where(self.mask, chosen, 0.0)
        # exclusive prefix sum: ln P_m(y_<t), 0 at t = 1
        prefix = torch.cumsum(chosen.to(torch.float64), dim=-1) - chosen.to(torch.float64)  # N x L
        weighted = prefix.to(self.dtype).unsqueeze(-1) + log_p  # N x L x K
        if self._log_ep_unnorm is None:
            self._log_ep_unnorm, self._log_prefix_norm = weighted, prefix
        else:
            self._log_ep_unnorm = torch.logaddexp(self._log_ep_unnorm, weighted)
            self._log_prefix_norm = torch.logaddexp(self._log_prefix_norm, prefix)
        self._chosen.append(chosen.to(torch.float64))

    def finalize(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(token, sequence)`` dicts keyed by :data:`ENSEMBLE_TOKEN_KEYS` / :data:`ENSEMBLE_SEQUENCE_KEYS`."""
        if not self._chosen:
            raise ValueError("no member was added to the ensemble (M = 0)")
        mask = self.mask
        num_members = len(self._chosen)
        stats = self._pe.finalize()
        pe = stats.uncertainty()  # each N x L
        log_ep = self._log_ep_unnorm - self._log_prefix_norm.to(self.dtype).unsqueeze(-1)  # N x L x K
        ep_entropy = -xlogx_from_log(log_ep).sum(-1)  # N x L
        ep_gap = log_ep - stats.mean_log_probs  # N x L x K
        ep_mkl = (log_ep.exp() * torch.where(log_ep > -math.inf, ep_gap, 0.0)).sum(-1).clamp(min=0.0)
        chosen = torch.stack(self._chosen)  # M x N x L
        prefix = torch.cumsum(chosen, -1) - chosen  # M x N x L
        log_mean_y = torch.logsumexp(chosen, 0) - math.log(num_members)  # N x L: ln pbar(y_t)
        log_ep_y = torch.logsumexp(prefix + chosen, 0) - torch.logsumexp(prefix, 0)  # N x L: ln p_ep(y_t)
        token = {
            "token_nll": -log_mean_y,
            "token_ep_nll": -log_ep_y,
            "token_data": -chosen.mean(0),
            **pe,
            "ep_entropy_of_expected": ep_entropy,
            "ep_mutual_information": ep_entropy - stats.expected_entropy,
            "ep_epkl": ep_entropy - stats.expected_entropy + ep_mkl,
            "ep_mkl": ep_mkl,
        }
        token = {name: torch.where(mask, value.to(torch.float64), 0.0) for name, value in token.items()}
        length = mask.sum(-1).clamp(min=1).to(torch.float64)  # N
        log_prob = (log_mean_y * mask).sum(-1)  # N
        member_log_prob = (chosen * mask).sum(-1)  # M x N: ln P_m(y)
        score = -log_prob / length
        ep_total = -(torch.logsumexp(member_log_prob, 0) - math.log(num_members)) / length
        data = -member_log_prob.mean(0) / length
        sequence = {
            "log_prob": log_prob,
            "score": score,
            "ep_total": ep_total,
            "data": data,
            "pe_knowledge": data - score,
            "ep_knowledge": data - ep_total,
        }
        sequence.update({name: _masked_mean(token[name], mask) for name in _PE_KEYS + _EP_KEYS})
        return token, sequence


def ensemble_sequence_uncertainty(
    member_logits: Tensor, target: Tensor, mask: Tensor
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Stacked convenience for :class:`EnsembleSequenceAccumulator`: ``member_logits`` is ``[N, L, M, K]``."""
    if member_logits.dim() != 4:
        raise ValueError(f"member logits must be [N, L, M, K], got shape {tuple(member_logits.shape)}")
    dtype = torch.float64 if member_logits.dtype == torch.float64 else torch.float32
    accumulator = EnsembleSequenceAccumulator(target, mask, dtype=dtype)
    for m in range(member_logits.shape[2]):
        accumulator.add(member_logits[:, :, m])
    return accumulator.finalize()
