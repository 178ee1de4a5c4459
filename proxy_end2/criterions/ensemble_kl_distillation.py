"""``ensemble_kl_distillation``: classic ensemble distillation (EnD), KL(pbar || softmax(z)) per token.

The student learns only the ensemble's mean prediction, not its spread; it is the quality baseline for
the Dirichlet criteria (Hinton et al. 2015; reference-method.md section 5.1).
"""
from fairseq.criterions import register_criterion

from ..losses import ensemble_kl_loss_from_stats
from .distillation_base import DistillationCriterion, DistillationCriterionConfig


@register_criterion("ensemble_kl_distillation", dataclass=DistillationCriterionConfig)
class EnsembleKLDistillationCriterion(DistillationCriterion):
    """Per token: ``sum_k pbar_k (ln pbar_k - ln softmax(z)_k)`` (nats)."""

    supports_teacher_cache = True  # the top-k mean with its tail spread evenly (proxy_end2.uncertainty.topk)

    def token_losses(self, model, logits, stats):
        return ensemble_kl_loss_from_stats(logits, stats)
