"""``dirichlet_nll_distillation``: Ensemble Distribution Distillation (EnD^2, Malinin et al., ICLR 2020).

Per token the negative log-likelihood of the members' distributions under the student's Dirichlet,
``(1/M) sum_m -ln Dir(p_m | alpha)``, ``alpha = exp(z) + model_offset``. Converges poorly with many classes
(the tail classes dominate the gradient), which is what the Proxy-Dirichlet loss fixes; kept as a baseline.
"""
from fairseq.criterions import register_criterion

from ..losses import dirichlet_nll_loss_from_stats
from .distillation_base import DistillationCriterion, DistillationCriterionConfig, model_offset_of


@register_criterion("dirichlet_nll_distillation", dataclass=DistillationCriterionConfig)
class DirichletNLLDistillationCriterion(DistillationCriterion):
    """Per token: ``lnGamma-terms - sum_k (alpha_k - 1) mean_m ln p_mk`` (nats, float64)."""

    def token_losses(self, model, logits, stats):
        return dirichlet_nll_loss_from_stats(logits, stats, model_offset=model_offset_of(model))
