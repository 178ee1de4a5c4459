r"""Where a loss sends its gradient: the ensemble's top classes or the tail.

For every probe position :math:`i` the gradient :math:`g_i = \partial C_i / \partial z_i \in \mathbb{R}^K` of
the per-position loss w.r.t. the student's logits is split by class. The *share* of a set of classes
:math:`S` is the fraction of the squared norm it carries,

.. math::

    \mathrm{share}_i(S) = \frac{\sum_{k \in S} g_{ik}^2}{\sum_k g_{ik}^2}, \qquad
    \mathrm{share}_i(S) + \mathrm{share}_i(\bar S) = 1,

averaged over positions (positions with a zero gradient are skipped). :math:`S` is the ensemble's top-``h``
classes by :math:`\bar p_i` (``top1``, ``top5``), or the fewest top classes that cover ``MASS_COVERAGE`` of
:math:`\bar p_i` (``mass90``). The rest of the classes is the tail. Ryabinin et al. (2021) show that for the
EnD\ :sup:`2` loss low-probability classes get the larger gradients; this module measures it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .objectives import per_position_loss
from .transfer import TransferSet

#: Head sizes (number of top classes by pbar) whose gradient share is reported.
HEAD_SIZES: tuple[int, ...] = (1, 5)
#: Probability mass of pbar that the "mass90" head covers.
MASS_COVERAGE = 0.9


def logit_gradients(model: nn.Module, loss_name: str, probe: TransferSet) -> Tensor:
    """Per-position gradients ``dC_i/dz_i``, ``[N, K]`` float64, of the loss ``loss_name`` at the student's
    current logits on the probe inputs (the model's parameters get no gradient)."""
    with torch.no_grad():
        logits = model(probe.inputs)  # [N, K]
    z = logits.detach().requires_grad_(True)
    # positions are independent, so the gradient of the sum is every position's own gradient
    (grad,) = torch.autograd.grad(per_position_loss(loss_name, z, probe.stats).sum(), z)
    return grad.double()


def mass_head_mask(log_mean_probs: Tensor, coverage: float = MASS_COVERAGE) -> Tensor:
    """``[N, K]`` bool mask of the fewest top classes whose pbar sums to at least ``coverage`` (at least one)."""
    probs, order = log_mean_probs.double().exp().sort(-1, descending=True)  # [N, K]
    mass_before = probs.cumsum(-1) - probs  # [N, K], mass of the classes ranked above
    keep_sorted = mass_before < coverage
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)


def head_shares(grad: Tensor, log_mean_probs: Tensor, head_sizes: tuple[int, ...] = HEAD_SIZES) -> dict[str, Tensor]:
    """Per-position shares ``[N]`` of the squared gradient norm for each head (``top<h>``, ``mass90``), and
    the tails' shares (``tail_top<h>``, ``tail_mass90``); NaN where the gradient is zero."""
    energy = grad.double().pow(2)  # [N, K]
    total = energy.sum(-1)  # [N]
    total = torch.where(total > 0, total, torch.full_like(total, torch.nan))
    order = log_mean_probs.argsort(-1, descending=True)  # [N, K]
    masks = {}
    for h in head_sizes:
        top = order[:, : min(h, grad.shape[-1])]  # [N, h]
        masks[f"top{h}"] = torch.zeros_like(energy, dtype=torch.bool).scatter_(-1, top, True)
    masks["mass90"] = mass_head_mask(log_mean_probs)
    out = {}
    for name, mask in masks.items():
        out[name] = (energy * mask).sum(-1) / total
        out[f"tail_{name}"] = (energy * ~mask).sum(-1) / total
    out["mass90_size"] = masks["mass90"].sum(-1).double()
    return out


def gradient_summary(model: nn.Module, loss_name: str, probe: TransferSet) -> dict[str, float]:
    """Means over the probe positions of :func:`head_shares` and of the gradient norm (``grad_norm``)."""
    grad = logit_gradients(model, loss_name, probe)
    shares = head_shares(grad, probe.stats.log_mean_probs)
    out = {name: float(torch.nanmean(value)) for name, value in shares.items()}
    out["grad_norm"] = float(grad.norm(dim=-1).mean())
    return out
