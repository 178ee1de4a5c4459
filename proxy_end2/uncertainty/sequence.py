r"""Token- and sequence-level uncertainty of autoregressive predictions (Malinin & Gales, ICLR 2021).

Inputs are teacher-forced model outputs on given hypotheses: logits ``[N, L, K]`` (N hypotheses, L target
positions, K classes), the hypothesis tokens ``target [N, L]`` (EOS included) and a mask of the non-pad
positions. Outputs are two dicts: token measures ``[N, L]`` (0 at padding) and sequence measures ``[N]``,
in nats. Pure torch, no fairseq.

**Ensemble** of M ordinary models with member next-token distributions :math:`p_m(\cdot \mid y_{<t})`:

* "pe" (product of expectations): the member mean :math:`\bar p = \frac1M \sum_m p_m` at every step;
  token measures :math:`\mathcal H[\bar p]`, ExE, MI, EPKL, MKL (see :mod:`.ensemble`), each :math:`\ge 0`.
* "ep" (expectation of products): the members weighted by their posterior given the prefix,
  :math:`w_{m,t} = P_m(y_{<t}) / \sum_{m'} P_{m'}(y_{<t})`, :math:`p_{ep} = \sum_m w_{m,t} p_m` (so that
  :math:`\prod_t p_{ep}(y_t) = \frac1M \sum_m P_m(y)`), and every expectation over members taken with the
  same weights:

  .. math::

      \text{ep\_expected\_entropy} &= \textstyle\sum_m w_m \mathcal H[p_m], \qquad
      \text{ep\_mutual\_information} = \mathcal H[p_{ep}] - \text{ep\_expected\_entropy}
          = \sum_m w_m \mathrm{KL}(p_m \| p_{ep}) \ge 0, \\
      \text{ep\_mkl} &= \textstyle\sum_m w_m \mathrm{KL}(p_{ep} \| p_m) \ge 0, \qquad
      \text{ep\_epkl} = \sum_{m, m'} w_m w_{m'} \mathrm{KL}(p_m \| p_{m'})
          = \text{ep\_mutual\_information} + \text{ep\_mkl} \ge 0.

  The authors' code forms the ep measures with the weighted mean :math:`p_{ep}` but *uniform* expectations
  over the members; kept as ``authors_ep_mutual_information`` :math:`= \mathcal H[p_{ep}] - \mathrm{ExE}`
  and ``authors_ep_epkl`` :math:`= U - \mathrm{ExE}` (both can be negative when the weights are unequal),
  and ``authors_ep_mkl`` :math:`= U - \mathcal H[p_{ep}] = \frac1M\sum_m \mathrm{KL}(p_{ep}\|p_m) \ge 0`, with
  :math:`U = -\sum_k p_{ep,k} \frac1M \sum_m \ln p_{mk}`. At :math:`t = 1`, or when all members agree,
  ep = pe for all of them.
* chosen-token measures: ``token_nll`` :math:`= -\ln \bar p(y_t)`, ``token_ep_nll``
  :math:`= -\ln p_{ep}(y_t)`, ``token_data`` :math:`= -\frac1M \sum_m \ln p_m(y_t)`.
* sequence measures (length L includes EOS): ``log_prob`` :math:`= \sum_t \ln \bar p(y_t)`,
  ``score`` :math:`= -\frac1L \sum_t \ln \bar p(y_t)`, ``ep_total`` :math:`= -\frac1L \ln \frac1M
  \sum_m P_m(y)`, ``data`` :math:`= -\frac1L \frac1M \sum_m \ln P_m(y)`, ``pe_knowledge`` = data - score
  :math:`\ge 0`, ``ep_knowledge`` = data - ep_total :math:`\ge 0`, and the means over positions of the
  pe/ep token measures.

Numerics of the ep weights: the prefix log-probabilities :math:`\ln P_m(y_{<t})` reach thousands of nats on
long hypotheses; they are summed in float64, and only their differences to the first member's prefix (not
the prefixes themselves) enter the float32 accumulators, so the weights keep full precision.

**Prior Network** with logits z, :math:`\alpha = e^z + c`, its mean :math:`\mu = \alpha / \alpha_0` and
:math:`q = \mathrm{softmax}(z / T)`, the distribution beam search used (temperature T, 1 by default):

* ``token_nll`` :math:`= -\ln q(y_t)` and ``entropy_of_expected`` :math:`= \mathcal H[q]` (total uncertainty of
  what was decoded);
* the closed-form Dirichlet measures of :func:`~proxy_end2.uncertainty.dirichlet.dirichlet_uncertainty`,
  all of :math:`\mathrm{Dir}(\alpha)` and its mean :math:`\mu`: ``dirichlet_entropy_of_expected``
  :math:`= \mathcal H[\mu]` ``= expected_entropy + mutual_information``, ``epkl``, ``mkl``;
* ``knowledge_score`` :math:`= \ln \mu_{y_t} - \mathbb E_{\mathrm{Dir}}[\ln \pi_{y_t}]
  = r(\alpha_0) - r(\alpha_{y_t}) \ge 0` (:math:`r = \psi - \ln`, increasing; Jensen), the chosen-token
  part of ``mkl`` and the Prior-Network analogue of the ensemble's ``token_data - token_nll``.

The two means differ when the offset c > 0: :math:`\mu = (1 - K c/\alpha_0)\, q_1 + (K c/\alpha_0)\, u`
with :math:`q_1 = \mathrm{softmax}(z)` and :math:`u` the uniform distribution, i.e. the Dirichlet mean puts
the mass :math:`K c / \alpha_0` evenly on all classes. For confident tokens (:math:`\alpha_0 \gg K c`) the two
coincide; where the student is unsure (small :math:`\alpha_0`), :math:`\mathcal H[\mu] > \mathcal H[q_1]`.
The temperature only changes q (it never changes the Dirichlet). Sequence: ``log_prob``
:math:`= \sum_t \ln q(y_t)`, ``score`` :math:`= -\log\_prob / L`, and the means over positions of the token
measures.

References:
    Malinin & Gales, "Uncertainty Estimation in Autoregressive Structured Prediction", ICLR 2021,
    https://arxiv.org/abs/2002.07650.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .dirichlet import dirichlet_concentrations, dirichlet_uncertainty
from ._numerics import digamma_minus_log, row_slices, xlogx_from_log
from .ensemble import EnsembleStatisticsAccumulator

PRIOR_NETWORK_TOKEN_KEYS: tuple[str, ...] = (
    "token_nll", "entropy_of_expected", "dirichlet_entropy_of_expected", "expected_entropy",
    "mutual_information", "epkl", "mkl", "knowledge_score",
)
PRIOR_NETWORK_SEQUENCE_KEYS: tuple[str, ...] = ("log_prob", "score") + PRIOR_NETWORK_TOKEN_KEYS[1:]

_PE_KEYS = ("entropy_of_expected", "expected_entropy", "mutual_information", "epkl", "mkl")
_EP_KEYS = ("ep_entropy_of_expected", "ep_expected_entropy", "ep_mutual_information", "ep_epkl", "ep_mkl")
_AUTHORS_EP_KEYS = ("authors_ep_mutual_information", "authors_ep_epkl", "authors_ep_mkl")
_POSITION_MEAN_KEYS = _PE_KEYS + _EP_KEYS + _AUTHORS_EP_KEYS
ENSEMBLE_TOKEN_KEYS: tuple[str, ...] = ("token_nll", "token_ep_nll", "token_data") + _POSITION_MEAN_KEYS
ENSEMBLE_SEQUENCE_KEYS: tuple[str, ...] = (
    ("log_prob", "score", "ep_total", "data", "pe_knowledge", "ep_knowledge") + _POSITION_MEAN_KEYS
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


def _hypothesis_chunks(num_hypotheses: int, length: int, num_classes: int, device,
                       max_elements: int | None) -> list[slice]:
    """Ranges of whole hypotheses whose ``[n, L, K]`` slices hold at most ``max_elements`` (default
    ``CHUNK_ELEMENTS``) elements, at least one hypothesis each: the passes over ``[..., K]`` below keep their
    temporaries chunk-sized."""
    return row_slices(num_hypotheses, max(1, length) * num_classes, device, max_elements)


def _prior_network_token_chunk(z: Tensor, y: Tensor, model_offset: float, temperature: float) -> dict[str, Tensor]:
    """The Prior-Network token measures (module docstring) of positions ``z`` ``[p, K]`` with decoded tokens
    ``y`` ``[p]``; float64 ``[p]`` each."""
    log_q = torch.log_softmax(z.to(torch.float64) / temperature, dim=-1)  # p x K
    log_q_y = log_q.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # p
    entropy_of_q = -xlogx_from_log(log_q).sum(-1)  # p
    del log_q
    alphas = dirichlet_concentrations(z, model_offset=model_offset, dtype=torch.float64)  # p x K
    dirichlet = dirichlet_uncertainty(alphas)  # each p
    alpha_y = alphas.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # p
    alpha_0 = alphas.sum(-1)  # p
    return {
        "token_nll": -log_q_y,
        "entropy_of_expected": entropy_of_q,
        "dirichlet_entropy_of_expected": dirichlet["entropy_of_expected"],
        "expected_entropy": dirichlet["expected_entropy"],
        "mutual_information": dirichlet["mutual_information"],
        "epkl": dirichlet["epkl"],
        "mkl": dirichlet["mkl"],
        # ln mu_y - (psi(alpha_y) - psi(alpha_0)) = r(alpha_0) - r(alpha_y) >= 0: no cancellation
        "knowledge_score": (digamma_minus_log(alpha_0) - digamma_minus_log(alpha_y)).clamp(min=0.0),
    }


def prior_network_sequence_uncertainty(
    logits: Tensor, target: Tensor, mask: Tensor, model_offset: float = 1.0, temperature: float = 1.0,
    chunk_elements: int | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Token ``[N, L]`` and sequence ``[N]`` measures of a Prior Network's teacher-forced logits.

    Args:
        logits: ``[N, L, K]`` student logits on the hypotheses (any float dtype), before any temperature.
        target: ``[N, L]`` hypothesis tokens (EOS included).
        mask: ``[N, L]`` bool, True at non-pad positions.
        model_offset: ``c`` in ``alpha = exp(z) + c``.
        temperature: ``T`` of the decoded distribution ``q = softmax(z / T)`` (``token_nll``, ``log_prob``,
            ``score``, ``entropy_of_expected``); the Dirichlet measures do not depend on it.
        chunk_elements: elements per row chunk of the float64 passes (default ``CHUNK_ELEMENTS``).

    Returns:
        ``(token, sequence)`` dicts keyed by :data:`PRIOR_NETWORK_TOKEN_KEYS` and
        :data:`PRIOR_NETWORK_SEQUENCE_KEYS`; float64; token values are 0 at padding.

    Memory: only the non-pad positions are evaluated, on row chunks: the float64 temporaries (about twenty
    chunk-sized tensors) are bounded whatever ``N * L * K`` is.
    """
    _check_inputs(logits, target, mask)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    k = logits.shape[-1]
    flat, flat_target = logits.reshape(-1, k), target.reshape(-1)  # views for contiguous logits
    positions = mask.reshape(-1).nonzero().squeeze(1)  # the non-pad positions
    token = {name: torch.zeros(flat_target.shape, dtype=torch.float64, device=logits.device)
             for name in PRIOR_NETWORK_TOKEN_KEYS}
    for rows in row_slices(positions.numel(), k, logits.device, chunk_elements):
        index = positions[rows]
        values = _prior_network_token_chunk(flat.index_select(0, index), flat_target.index_select(0, index),
                                            model_offset, temperature)
        for name, value in values.items():
            token[name].index_copy_(0, index, value)
    token = {name: value.view(mask.shape) for name, value in token.items()}  # 0 at padding
    log_prob = -token["token_nll"].sum(-1)  # N
    sequence = {"log_prob": log_prob, "score": -log_prob / mask.sum(-1).clamp(min=1)}
    sequence.update({name: _masked_mean(token[name], mask) for name in PRIOR_NETWORK_TOKEN_KEYS[1:]})
    return token, sequence


class EnsembleSequenceAccumulator:
    r"""Streams the members of an ensemble (one ``[N, L, K]`` logit tensor at a time) into the pe/ep measures.

    Memory is O(N * L * K) whatever the number of members: four ``[N, L, K]`` running sums in ``dtype`` (the
    two of :class:`~proxy_end2.uncertainty.EnsembleStatisticsAccumulator` for the pe statistics, and
    :math:`\ln \sum_m \rho_m p_m`, :math:`\ln \sum_m \rho_m (-\ln p_m)` for the ep ones, with
    :math:`\rho_m = P_m(y_{<t}) / P_1(y_{<t})`), updated in place on chunks of whole hypotheses, plus
    ``[N, L]`` float64 vectors (the prefix differences, :math:`\ln \sum_m \rho_m`,
    :math:`\ln \sum_m \rho_m \mathcal H[p_m]`) and the members' chosen-token log-probabilities (``[M, N, L]``).
    :meth:`finalize` hands the pe sums over to the statistics without a copy and computes the measures on
    chunks, so no further ``[N, L, K]`` tensor is allocated.
    """

    def __init__(self, target: Tensor, mask: Tensor, dtype: torch.dtype = torch.float32,
                 chunk_elements: int | None = None) -> None:
        self.target = target
        self.mask = mask
        self.dtype = dtype
        self.chunk_elements = chunk_elements  # elements per chunk of the [n, L, K] passes (None: CHUNK_ELEMENTS)
        self._pe = EnsembleStatisticsAccumulator(dtype=dtype, chunk_elements=chunk_elements)
        self._reference: Tensor | None = None  # N x L: ln P_1(y_<t), float64
        self._log_rho_sum: Tensor | None = None  # N x L: ln sum_m rho_m, float64
        self._log_ep_unnorm: Tensor | None = None  # N x L x K: ln sum_m rho_m p_m(.)
        self._log_neg_log_unnorm: Tensor | None = None  # N x L x K: ln sum_m rho_m (-ln p_m(.))
        self._log_entropy_unnorm: Tensor | None = None  # N x L: ln sum_m rho_m H[p_m], float64
        self._chosen: list[Tensor] = []  # M x [N x L]: ln p_m(y_t | y_<t), 0 at padding, float64

    def add(self, member_logits: Tensor) -> None:
        """Fold in one member's teacher-forced logits ``[N, L, K]`` (not modified, not kept)."""
        _check_inputs(member_logits, self.target, self.mask)
        self._pe.add(member_logits)
        first = self._log_ep_unnorm is None
        if first:
            self._log_ep_unnorm = torch.empty(member_logits.shape, dtype=self.dtype, device=member_logits.device)
            self._log_neg_log_unnorm = torch.empty_like(self._log_ep_unnorm)
            self._reference = torch.zeros(self.mask.shape, dtype=torch.float64, device=self.mask.device)
        chosen = torch.empty(self.mask.shape, dtype=torch.float64, device=self.mask.device)
        log_rho = torch.empty_like(chosen)
        log_entropy = torch.empty_like(chosen)
        n, length, k = member_logits.shape
        for rows in _hypothesis_chunks(n, length, k, member_logits.device, self.chunk_elements):
            self._add_chunk(member_logits[rows], rows, first, chosen, log_rho, log_entropy)
        if first:
            self._log_rho_sum, self._log_entropy_unnorm = log_rho, log_entropy + log_rho
        else:
            self._log_rho_sum = torch.logaddexp(self._log_rho_sum, log_rho)
            self._log_entropy_unnorm = torch.logaddexp(self._log_entropy_unnorm, log_entropy + log_rho)
        self._chosen.append(chosen)

    def _add_chunk(self, logits: Tensor, rows: slice, first: bool, chosen: Tensor, log_rho: Tensor,
                   log_entropy: Tensor) -> None:
        """One member on the hypotheses ``rows``: chosen-token log-probs, entropies and prefix weights into the
        ``[N, L]`` outputs, and the ep running sums updated in place."""
        log_p = torch.log_softmax(logits.to(self.dtype), dim=-1)  # n x L x K
        target, mask = self.target[rows], self.mask[rows]
        picked = log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1).to(torch.float64)  # n x L
        picked = torch.where(mask, picked, 0.0)
        prefix = torch.cumsum(picked, dim=-1) - picked  # exclusive prefix sum ln P_m(y_<t), 0 at t = 1
        if first:
            self._reference[rows] = prefix
        chosen[rows] = picked
        log_rho[rows] = prefix - self._reference[rows]  # small even when the prefixes are thousands of nats
        log_entropy[rows] = torch.log(-xlogx_from_log(log_p).sum(-1).to(torch.float64))
        log_rho_k = log_rho[rows].to(self.dtype).unsqueeze(-1)  # n x L x 1
        weighted_p = log_p.add(log_rho_k)  # ln rho_m + ln p_m
        weighted_neg_log = log_p.neg_().log_().add_(log_rho_k)  # ln rho_m + ln(-ln p_m), reusing log_p
        if first:
            self._log_ep_unnorm[rows] = weighted_p
            self._log_neg_log_unnorm[rows] = weighted_neg_log
        else:
            torch.logaddexp(self._log_ep_unnorm[rows], weighted_p, out=self._log_ep_unnorm[rows])
            torch.logaddexp(self._log_neg_log_unnorm[rows], weighted_neg_log, out=self._log_neg_log_unnorm[rows])

    def _ep_token_chunk(self, rows: slice, mean_log_probs: Tensor, expected_entropy: Tensor) -> dict[str, Tensor]:
        """The ep measures ``[n, L]`` (module docstring) of the hypotheses ``rows``."""
        log_norm = self._log_rho_sum[rows]  # n x L, float64
        log_norm_k = log_norm.to(self.dtype).unsqueeze(-1)
        log_ep = self._log_ep_unnorm[rows] - log_norm_k  # n x L x K: ln p_ep
        ep_entropy = -xlogx_from_log(log_ep).sum(-1)  # n x L
        p_ep = log_ep.exp()
        supported = log_ep > -math.inf
        # sum_k p_ep,k (ln p_ep,k - sum_m w_m ln p_mk): every bracket >= 0 by Jensen
        gap = (self._log_neg_log_unnorm[rows] - log_norm_k).exp_().add_(log_ep)
        ep_mkl = (p_ep * torch.where(supported, gap, 0.0).clamp_(min=0.0)).sum(-1)
        gap = torch.sub(log_ep, mean_log_probs[rows], out=gap)  # ln p_ep - mean_m ln p_m: the authors' MKL
        authors_mkl = (p_ep * torch.where(supported, gap, 0.0)).sum(-1).clamp(min=0.0)
        ep_exe = (self._log_entropy_unnorm[rows] - log_norm).exp()  # n x L, float64
        ep_mi = (ep_entropy.to(torch.float64) - ep_exe).clamp(min=0.0)
        authors_mi = ep_entropy - expected_entropy[rows]
        return {
            "ep_entropy_of_expected": ep_entropy,
            "ep_expected_entropy": ep_exe,
            "ep_mutual_information": ep_mi,
            "ep_epkl": ep_mi + ep_mkl.to(torch.float64),
            "ep_mkl": ep_mkl,
            "authors_ep_mutual_information": authors_mi,
            "authors_ep_epkl": authors_mi + authors_mkl,
            "authors_ep_mkl": authors_mkl,
        }

    def _ep_token_measures(self, stats) -> dict[str, Tensor]:
        """The ep measures ``[N, L]``, computed on chunks of hypotheses."""
        n, length, k = self._log_ep_unnorm.shape
        out: dict[str, Tensor] = {}
        for rows in _hypothesis_chunks(n, length, k, self._log_ep_unnorm.device, self.chunk_elements):
            chunk = self._ep_token_chunk(rows, stats.mean_log_probs, stats.expected_entropy)
            for name, value in chunk.items():
                out.setdefault(name, torch.empty(n, length, dtype=value.dtype, device=value.device))[rows] = value
        return out

    def finalize(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(token, sequence)`` dicts keyed by :data:`ENSEMBLE_TOKEN_KEYS` / :data:`ENSEMBLE_SEQUENCE_KEYS`.

        Call once: the pe running sums become the statistics (no copy), so no member can be added afterwards.
        """
        if not self._chosen:
            raise ValueError("no member was added to the ensemble (M = 0)")
        mask = self.mask
        num_members = len(self._chosen)
        stats = self._pe.finalize(release=True)
        chosen = torch.stack(self._chosen)  # M x N x L
        prefix = torch.cumsum(chosen, -1) - chosen  # M x N x L
        log_mean_y = torch.logsumexp(chosen, 0) - math.log(num_members)  # N x L: ln pbar(y_t)
        log_ep_y = torch.logsumexp(prefix + chosen, 0) - torch.logsumexp(prefix, 0)  # N x L: ln p_ep(y_t)
        token = {
            "token_nll": -log_mean_y,
            "token_ep_nll": -log_ep_y,
            "token_data": -chosen.mean(0),
            **stats.uncertainty(),
            **self._ep_token_measures(stats),
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
        sequence.update({name: _masked_mean(token[name], mask) for name in _POSITION_MEAN_KEYS})
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
