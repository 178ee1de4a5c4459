r"""Everything measured on a trained student (or on the ensemble itself) on held-out transfer sets.

In-domain: fidelity to the ensemble (KL, top-1 agreement), rank correlation of knowledge uncertainty with
the ensemble's, and, where labels exist, accuracy / NLL / ECE of the predictive distribution (the ensemble's
:math:`\bar p`; a Prior Network's Dirichlet mean :math:`\alpha/\alpha_0`; a softmax student's
:math:`\mathrm{softmax}(z)`). Per OOD set: ROC-AUC of every uncertainty measure the model has.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from proxy_end2.uncertainty import dirichlet_concentrations

from .calibration import classification_metrics
from .fidelity import kl_to_dirichlet_mean, kl_to_softmax, predict_logits, top1_agreement
from .objectives import is_dirichlet, model_offset
from .transfer import TransferSet
from .uncertainty_eval import ensemble_measures, ood_scores, rank_correlations, student_measures


@torch.no_grad()
def predictive_probs(loss_name: str, logits: Tensor) -> Tensor:
    """The student's predictive distribution ``[N, K]`` (float64): ``alpha / alpha_0`` for a Prior Network,
    ``softmax(z)`` otherwise."""
    if is_dirichlet(loss_name):
        alphas = dirichlet_concentrations(logits, model_offset=model_offset(loss_name))  # [N, K] float64
        return alphas / alphas.sum(-1, keepdim=True)
    return torch.softmax(logits.double(), dim=-1)


def assess_student(loss_name: str, model: nn.Module, test: TransferSet, ood_sets: dict[str, TransferSet]) -> dict:
    """Metrics of a student trained with ``loss_name``.

    Returns:
        ``kl_softmax`` (mean KL(pbar || softmax z), nats), ``top1_agreement``, for Prior Networks
        ``kl_dirichlet_mean`` (KL(pbar || alpha/alpha_0)) and ``alpha0_median``; ``spearman_<measure>`` per
        knowledge measure (rank correlation with the ensemble's on the same inputs); ``accuracy``/``nll``/``ece``
        if ``test`` has labels; per OOD set ``ood[<set>]``: ``auc_<measure>`` and ``spearman_<measure>``.
    """
    logits = predict_logits(model, test.inputs)  # [N, K]
    out: dict = {
        "kl_softmax": float(kl_to_softmax(logits, test.stats).mean()),
        "top1_agreement": top1_agreement(logits, test.stats),
    }
    if is_dirichlet(loss_name):
        offset = model_offset(loss_name)
        out["kl_dirichlet_mean"] = float(kl_to_dirichlet_mean(logits, test.stats, offset).mean())
        alpha0 = dirichlet_concentrations(logits, model_offset=offset).sum(-1)  # [N]
        out["alpha0_median"] = float(alpha0.median())
    if test.labels is not None:
        out.update(classification_metrics(predictive_probs(loss_name, logits), test.labels))
    measures_id = student_measures(loss_name, logits)
    out.update(rank_correlations(measures_id, ensemble_measures(test.stats)))
    out["ood"] = {}
    for name, ood in ood_sets.items():
        measures_ood = student_measures(loss_name, predict_logits(model, ood.inputs))
        out["ood"][name] = ood_scores(measures_id, measures_ood)
        out["ood"][name].update(rank_correlations(measures_ood, ensemble_measures(ood.stats)))
    return out


def assess_ensemble(test: TransferSet, ood_sets: dict[str, TransferSet]) -> dict:
    """The ensemble's own numbers: ``top1_mass`` (mean max pbar), mean ``total``/``mutual_information``/
    ``epkl`` in domain, ``kl_uniform`` (mean KL(pbar || uniform) = ln K - H[pbar]: the KL of a student that
    predicts the uniform distribution), classification metrics of pbar if labelled, and
    ``ood[<set>][auc_<measure>]`` (plus the OOD set's mean measures)."""
    measures_id = ensemble_measures(test.stats)
    pbar = test.stats.mean_probs().double()  # [N, K]
    out: dict = {"top1_mass": float(pbar.max(-1).values.mean()),
                 "kl_uniform": float(math.log(test.num_classes) - measures_id["total"].mean())}
    out.update({f"mean_{k}": float(v.mean()) for k, v in measures_id.items()})
    if test.labels is not None:
        out.update(classification_metrics(pbar, test.labels))
    out["ood"] = {}
    for name, ood in ood_sets.items():
        measures_ood = ensemble_measures(ood.stats)
        out["ood"][name] = ood_scores(measures_id, measures_ood)
        out["ood"][name].update({f"mean_{k}": float(v.mean()) for k, v in measures_ood.items()})
    return out
