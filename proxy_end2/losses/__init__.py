r"""Per-position distillation losses from an ensemble into one model (no reduction, no masking).

One loss per module: :mod:`.proxy_dirichlet`, :mod:`.forward_proxy_dirichlet`, :mod:`.dirichlet_nll`,
:mod:`.ensemble_kl`.

Pure torch (no fairseq): the fairseq criteria call the ``*_from_stats`` functions with teacher statistics
streamed one member at a time (:class:`~proxy_end2.uncertainty.EnsembleStatisticsAccumulator`); the plain
functions build the statistics from stacked ``[..., M, K]`` teacher logits and then call the same
``*_from_stats`` code. Any leading shape ``[...]`` (``[B, K]`` for image classifiers, ``[B, T, K]`` for
sequence models); classes last; nats.

* :func:`proxy_dirichlet_loss`: the Proxy-Dirichlet reverse-KL loss (the method; float64);
* :func:`forward_proxy_dirichlet_loss`: the forward-KL baseline to the same proxy target (float64);
* :func:`dirichlet_nll_loss`: EnD\ :sup:`2`, the ensemble's mean negative Dirichlet log-likelihood (float64);
* :func:`ensemble_kl_loss`: classic ensemble distillation :math:`\mathrm{KL}(\bar p \| \mathrm{softmax}(z))`.

Student logits may be fp16/bf16: they are upcast inside, and their gradient comes back in their dtype.

References:
    Ryabinin, Malinin & Gales, "Scaling Ensemble Distribution Distillation to Many Classes with Proxy
    Targets", NeurIPS 2021, https://arxiv.org/abs/2105.06987.
    Malinin, Mlodozeniec & Gales, "Ensemble Distribution Distillation", ICLR 2020,
    https://arxiv.org/abs/1905.00076.
    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015,
    https://arxiv.org/abs/1503.02531.
"""
from .dirichlet_nll import dirichlet_nll_loss, dirichlet_nll_loss_from_stats
from .ensemble_kl import ensemble_kl_loss, ensemble_kl_loss_from_stats
from .forward_proxy_dirichlet import (
    forward_proxy_dirichlet_loss,
    forward_proxy_dirichlet_loss_from_stats,
    forward_proxy_dirichlet_loss_from_target,
)
from .proxy_dirichlet import proxy_dirichlet_loss, proxy_dirichlet_loss_from_stats, proxy_dirichlet_loss_from_target

__all__ = [
    "proxy_dirichlet_loss",
    "proxy_dirichlet_loss_from_stats",
    "proxy_dirichlet_loss_from_target",
    "forward_proxy_dirichlet_loss",
    "forward_proxy_dirichlet_loss_from_stats",
    "forward_proxy_dirichlet_loss_from_target",
    "dirichlet_nll_loss",
    "dirichlet_nll_loss_from_stats",
    "ensemble_kl_loss",
    "ensemble_kl_loss_from_stats",
]
