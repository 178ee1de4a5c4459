"""Accuracy, negative log-likelihood and expected calibration error of a predictive distribution vs labels."""
from __future__ import annotations

import torch
from torch import Tensor

#: Equal-width confidence bins of the ECE.
ECE_BINS = 15
#: Floor on the probability of the label in the NLL (a log of 0 would be infinite).
PROB_FLOOR = 1e-12


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of ``probs`` ``[N, K]`` whose arg-max is ``labels`` ``[N]``."""
    return float((probs.argmax(-1) == labels).double().mean())


def nll(probs: Tensor, labels: Tensor) -> float:
    """Mean ``-ln probs[label]``, nats."""
    picked = probs.double().gather(-1, labels[:, None]).squeeze(-1)  # [N]
    return float(-picked.clamp(min=PROB_FLOOR).log().mean())


def expected_calibration_error(probs: Tensor, labels: Tensor, num_bins: int = ECE_BINS) -> float:
    r"""ECE with ``num_bins`` equal-width bins of the confidence :math:`\max_k p_k` on [0, 1]:
    :math:`\sum_b \frac{n_b}{N} |\mathrm{acc}_b - \mathrm{conf}_b|` (a fraction, not %)."""
    confidence, predicted = probs.double().max(-1)  # [N], [N]
    correct = (predicted == labels).double()
    bins = torch.clamp((confidence * num_bins).long(), max=num_bins - 1)  # [N], bin of each confidence
    total = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, torch.ones_like(confidence))
    conf_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, confidence)
    acc_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, correct)
    return float((conf_sum - acc_sum).abs().sum() / labels.numel())


def classification_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """``{"accuracy", "nll", "ece"}`` of ``probs`` ``[N, K]`` against ``labels`` ``[N]``."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }
