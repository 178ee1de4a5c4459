r"""How closely a student's mean prediction copies the ensemble's mean :math:`\bar p` (nats, fractions).

Two "student means" exist for a Prior Network: :math:`\mathrm{softmax}(z)` (what the Proxy-Dirichlet loss
drives to :math:`\bar p` at its stationary point, with model offset 1) and the Dirichlet's own mean
:math:`\mu = \alpha/\alpha_0`, :math:`\alpha = e^z + c` (its predictive distribution). For a plain softmax
student (EnD) only the first exists. Both have the same arg-max, since :math:`\alpha` grows with :math:`z`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from proxy_end2.losses import ensemble_kl_loss_from_stats
from proxy_end2.uncertainty import EnsembleStatistics

#: Inputs per forward pass at evaluation.
EVAL_BATCH = 1024


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: Tensor, batch_size: int = EVAL_BATCH) -> Tensor:
    """Student logits ``[N, K]`` (float32) of ``inputs`` ``[N, ...]``, in eval mode."""
    model.eval()
    return torch.cat([model(inputs[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size)])


@torch.no_grad()
def kl_to_softmax(logits: Tensor, stats: EnsembleStatistics) -> Tensor:
    r""":math:`\mathrm{KL}(\bar p \,\|\, \mathrm{softmax}(z))` per position, ``[N]`` nats (float64)."""
    return ensemble_kl_loss_from_stats(logits.double(), stats)


@torch.no_grad()
def kl_to_dirichlet_mean(logits: Tensor, stats: EnsembleStatistics, model_offset: float) -> Tensor:
    r""":math:`\mathrm{KL}(\bar p \,\|\, \alpha/\alpha_0)` per position, ``[N]`` nats (float64),
    :math:`\alpha = e^z + c` with ``c = model_offset`` (logits clamped at 700 against overflow)."""
    log_alpha = torch.logaddexp(logits.double().clamp(max=700.0), torch.tensor(float(model_offset)).log().double())
    log_mu = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)  # [N, K]
    log_pbar = stats.log_mean_probs.double()  # [N, K]
    return (log_pbar.exp() * (log_pbar - log_mu)).sum(-1).clamp(min=0.0)


def top1_agreement(logits: Tensor, stats: EnsembleStatistics) -> float:
    """Fraction of positions where the student's arg-max class is the ensemble's."""
    return float((logits.argmax(-1) == stats.log_mean_probs.argmax(-1)).double().mean())
