"""``proxy_dirichlet_distillation``: the Proxy-Dirichlet reverse-KL loss (Ryabinin, Malinin & Gales, 2021).

Per token, with ``alpha = exp(z) + model_offset`` and the ensemble's mean ``pbar`` and proxy precision
``B = (K - 1) / (2 MKL + eps) + K * target_offset``:

    C = -sum_k pbar_k [psi(alpha_k) - psi(alpha_0)] - H[Dir(alpha)] / B
      = KL(Dir(alpha) || Dir(B pbar + 1)) / B + const,

minimised at ``alpha = B pbar + 1`` (so ``softmax(z) = pbar`` with offset 1). See
:func:`proxy_end2.losses.proxy_dirichlet_loss` for the derivation and numerics.
"""
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.dataclass import ChoiceEnum

from ..losses import proxy_dirichlet_loss_from_stats
from ..uncertainty import PRECISION_CHOICES, proxy_target_precision
from .distillation_base import DistillationCriterion, DistillationCriterionConfig, model_offset_of


@dataclass
class ProxyDirichletDistillationConfig(DistillationCriterionConfig):
    target_concentration: ChoiceEnum(list(PRECISION_CHOICES)) = field(
        default="mkl",
        metadata={
            "help": "how the proxy target's precision is estimated from the ensemble: "
            "'mkl': (K-1)/(2*MKL+eps) (the paper), 'epkl': (K-1)/(EPKL+eps)"
        },
    )
    target_offset: float = field(
        default=1.0,
        metadata={
            "help": "adds K * target_offset to the target precision B (the paper's recipes use 1; "
            "0 gives the textbook target Dir(beta_hat * pbar + 1))"
        },
    )


@register_criterion("proxy_dirichlet_distillation", dataclass=ProxyDirichletDistillationConfig)
class ProxyDirichletDistillationCriterion(DistillationCriterion):
    """Reverse KL from the student's Dirichlet to the ensemble's Proxy-Dirichlet, per token (nats)."""

    supports_teacher_cache = True  # the top-k mean with its tail spread evenly (proxy_end2.uncertainty.topk)

    def __init__(self, task, sentence_avg, target_concentration="mkl", target_offset=1.0):
        super().__init__(task, sentence_avg)
        if target_offset < 0:
            raise ValueError(f"--target-offset must be >= 0, got {target_offset}")
        self.target_concentration = str(target_concentration)
        self.target_offset = float(target_offset)

    def token_losses(self, model, logits, stats):
        return proxy_dirichlet_loss_from_stats(
            logits,
            stats,
            model_offset=model_offset_of(model),
            target_offset=self.target_offset,
            precision=self.target_concentration,
        )

    def target_precision(self, stats):
        return proxy_target_precision(stats, self.target_concentration, self.target_offset)
