"""``forward_proxy_dirichlet_distillation``: the forward-KL Proxy-Dirichlet baseline (Ryabinin, Malinin & Gales, 2021).

Per token, with ``alpha = exp(z) + model_offset`` and the same target as ``proxy_dirichlet_distillation``,
``beta = B pbar + 1``, ``B = (K - 1) / (2 MKL + eps) + K * target_offset``:

    C = KL(Dir(beta) || Dir(alpha))      (nats, float64, not divided by B),

minimised at ``alpha = beta`` like the reverse loss; only the direction of the KL differs. The authors'
forward criterion with their ``--target-offset 1`` is this one with ``--target-offset 0``. See
:mod:`proxy_end2.losses.forward_proxy_dirichlet` for the derivation, numerics and conditioning.
"""
from dataclasses import dataclass

from fairseq.criterions import register_criterion

from ..losses import forward_proxy_dirichlet_loss_from_stats
from .distillation_base import model_offset_of
from .proxy_dirichlet_distillation import ProxyDirichletDistillationConfig, ProxyDirichletDistillationCriterion


@dataclass
class ForwardProxyDirichletDistillationConfig(ProxyDirichletDistillationConfig):
    """The reverse criterion's options (``--target-concentration``, ``--target-offset``), same meaning."""


@register_criterion("forward_proxy_dirichlet_distillation", dataclass=ForwardProxyDirichletDistillationConfig)
class ForwardProxyDirichletDistillationCriterion(ProxyDirichletDistillationCriterion):
    """Forward KL from the ensemble's Proxy-Dirichlet to the student's Dirichlet, per token (nats)."""

    #: the forward loss reads the ensemble's full mean (not its top-k): trained with the teachers online only
    supports_teacher_cache = False

    def token_losses(self, model, logits, stats):
        return forward_proxy_dirichlet_loss_from_stats(
            logits,
            stats,
            model_offset=model_offset_of(model),
            target_offset=self.target_offset,
            precision=self.target_concentration,
        )
