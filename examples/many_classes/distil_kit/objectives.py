r"""The distillation objectives compared by the examples, by name, on per-position ensemble statistics.

* ``"proxy"``: Proxy-EnD\ :sup:`2` (Ryabinin, Malinin & Gales 2021), reverse KL from the student's Dirichlet
  to the Proxy-Dirichlet target :math:`\mathrm{Dir}(B\bar p + 1)`
  (:func:`proxy_end2.losses.proxy_dirichlet_loss_from_stats`);
* ``"end2"``: EnD\ :sup:`2` (Malinin, Mlodozeniec & Gales 2020), the members' mean negative Dirichlet
  log-likelihood (:func:`proxy_end2.losses.dirichlet_nll_loss_from_stats`), with the recipes' model offset
  ``c = 1``;
* ``"end2_c0"``: the same loss with ``c = 0``, i.e. :math:`\alpha = e^z` (no lower bound of 1 on the
  concentrations);
* ``"kl"``: EnD, classic ensemble distillation :math:`\mathrm{KL}(\bar p \,\|\, \mathrm{softmax}(z))`
  (:func:`proxy_end2.losses.ensemble_kl_loss_from_stats`). Its student is a plain softmax classifier: it has
  no Dirichlet, so its knowledge uncertainty is not defined.

The ``*_from_stats`` functions are the same losses as ``proxy_dirichlet_loss(z, teacher_logits)`` etc.
(those build the statistics from stacked ``[..., M, K]`` logits and call them); the examples pass
statistics so that the teachers run once per input, streamed member by member.

Dirichlet students use concentrations :math:`\alpha_k = e^{z_k} + c` with the offset ``c`` of
:data:`MODEL_OFFSETS` (the recipes' ``c = 1`` except for ``"end2_c0"``); the proxy target uses the recipes'
``TARGET_OFFSET = 1`` and the ``"mkl"`` precision estimate.
"""
from __future__ import annotations

from torch import Tensor

from proxy_end2.losses import (
    dirichlet_nll_loss_from_stats,
    ensemble_kl_loss_from_stats,
    proxy_dirichlet_loss_from_stats,
)
from proxy_end2.uncertainty import EnsembleStatistics

#: Offset ``t`` of the proxy target, B = beta_hat + K t (the authors' recipes).
TARGET_OFFSET = 1.0
#: Precision estimate of the proxy target: beta_hat = (K - 1) / (2 MKL + eps).
PRECISION = "mkl"

LOSS_NAMES: tuple[str, ...] = ("proxy", "end2", "end2_c0", "kl")
"""Objectives in the order the tables list them."""

LOSS_LABELS: dict[str, str] = {
    "proxy": "Proxy-EnD^2",
    "end2": "EnD^2 (c=1)",
    "end2_c0": "EnD^2 (c=0)",
    "kl": "EnD (KL)",
}
"""Names used in tables and figures."""

MODEL_OFFSETS: dict[str, float] = {"proxy": 1.0, "end2": 1.0, "end2_c0": 0.0}
"""Offset ``c`` of each Prior-Network student, alpha = exp(z) + c (the authors' recipes use 1 for both
Dirichlet losses). The objectives listed here are the Dirichlet ones."""


def check_loss_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`LOSS_NAMES`."""
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSS_NAMES}")


def is_dirichlet(name: str) -> bool:
    """Whether the student trained with loss ``name`` is a Prior Network (Dirichlet output)."""
    check_loss_name(name)
    return name in MODEL_OFFSETS


def model_offset(name: str) -> float:
    """The offset ``c`` of the Prior-Network student of loss ``name`` (``ValueError`` for a softmax student)."""
    if not is_dirichlet(name):
        raise ValueError(f"the {name!r} student is a softmax classifier: it has no concentrations")
    return MODEL_OFFSETS[name]


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
            logits, stats, model_offset=model_offset(name), target_offset=TARGET_OFFSET, precision=PRECISION
        )
    if is_dirichlet(name):
        return dirichlet_nll_loss_from_stats(logits, stats, model_offset=model_offset(name))
    return ensemble_kl_loss_from_stats(logits, stats)
