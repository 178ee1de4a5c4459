r"""The three distillation objectives compared by the examples, by name, on per-position ensemble statistics.

* ``"proxy"``: Proxy-EnD\ :sup:`2` (Ryabinin, Malinin & Gales 2021), reverse KL from the student's Dirichlet
  to the Proxy-Dirichlet target :math:`\mathrm{Dir}(B\bar p + 1)`
  (:func:`proxy_end2.losses.proxy_dirichlet_loss_from_stats`);
* ``"end2"``: EnD\ :sup:`2` (Malinin, Mlodozeniec & Gales 2020), the members' mean negative Dirichlet
  log-likelihood (:func:`proxy_end2.losses.dirichlet_nll_loss_from_stats`);
* ``"kl"``: EnD, classic ensemble distillation :math:`\mathrm{KL}(\bar p \,\|\, \mathrm{softmax}(z))`
  (:func:`proxy_end2.losses.ensemble_kl_loss_from_stats`). Its student is a plain softmax classifier: it has
  no Dirichlet, so its knowledge uncertainty is not defined.

The ``*_from_stats`` functions are the same losses as ``proxy_dirichlet_loss(z, teacher_logits)`` etc.
(those build the statistics from stacked ``[..., M, K]`` logits and call them); the examples pass
statistics so that the teachers run once per input, streamed member by member.

Dirichlet students use concentrations :math:`\alpha_k = e^{z_k} + c` with the recipes' offsets
``MODEL_OFFSET = TARGET_OFFSET = 1`` and the ``"mkl"`` precision estimate.
"""
from __future__ import annotations

from torch import Tensor

from proxy_end2.losses import (
    dirichlet_nll_loss_from_stats,
    ensemble_kl_loss_from_stats,
    proxy_dirichlet_loss_from_stats,
)
from proxy_end2.uncertainty import EnsembleStatistics

#: Offset ``c`` of the Dirichlet students, alpha = exp(z) + c (the authors' recipes use 1 for both losses).
MODEL_OFFSET = 1.0
#: Offset ``t`` of the proxy target, B = beta_hat + K t (the authors' recipes).
TARGET_OFFSET = 1.0
#: Precision estimate of the proxy target: beta_hat = (K - 1) / (2 MKL + eps).
PRECISION = "mkl"

LOSS_NAMES: tuple[str, ...] = ("proxy", "end2", "kl")
"""Objectives in the order the tables list them."""

LOSS_LABELS: dict[str, str] = {"proxy": "Proxy-EnD^2", "end2": "EnD^2", "kl": "EnD (KL)"}
"""Names used in tables and figures."""

DIRICHLET_LOSSES: frozenset[str] = frozenset({"proxy", "end2"})
"""Objectives whose student is a Prior Network (a Dirichlet over the categorical)."""


def check_loss_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`LOSS_NAMES`."""
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSS_NAMES}")


def is_dirichlet(name: str) -> bool:
    """Whether the student trained with loss ``name`` is a Prior Network (Dirichlet output)."""
    check_loss_name(name)
    return name in DIRICHLET_LOSSES


def per_position_loss(name: str, logits: Tensor, stats: EnsembleStatistics) -> Tensor:
    """The loss ``name`` for every position, nats.

    Args:
        name: one of :data:`LOSS_NAMES`.
        logits: ``[N, K]`` student logits ``z``.
        stats: teacher statistics with leading shape ``[N]``.

    Returns:
        ``[N]`` (float64 for the Dirichlet losses, float32 for ``"kl"`` with float32 inputs), not reduced.
        Differentiable w.r.t. ``logits``.
    """
    check_loss_name(name)
    if name == "proxy":
        return proxy_dirichlet_loss_from_stats(
            logits, stats, model_offset=MODEL_OFFSET, target_offset=TARGET_OFFSET, precision=PRECISION
        )
    if name == "end2":
        return dirichlet_nll_loss_from_stats(logits, stats, model_offset=MODEL_OFFSET)
    return ensemble_kl_loss_from_stats(logits, stats)
