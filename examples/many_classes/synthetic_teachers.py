r"""A controlled teacher ensemble: a long-tailed (Zipf) mean over K classes and known member disagreement.

Inputs :math:`x \in \mathbb{R}^D`, in-domain :math:`x \sim \mathcal{N}(0, I)`. Member :math:`m` has logits

.. math::

    \ell_m(x)_k = -s \ln k + \tau\, (E\,\phi_U(x))_k + \sigma(x)\, (E_m\,\phi_{U_m}(x))_k ,
    \qquad \phi_U(x) = \frac{\tanh(Ux)}{\lVert \tanh(Ux) \rVert},

with random Gaussian :math:`U, U_m` (``[F, D]``, variance :math:`1/D`) and :math:`E, E_m` (``[K, F]``, unit
variance), fixed by the seed:

* :math:`-s\ln k` is a Zipf prior (exponent :math:`s`) over the classes: a few frequent classes and a long
  tail, truncated at :math:`K` (like token frequencies of a vocabulary);
* :math:`\tau\,E\phi_U(x)` is the shared, input-dependent part (every class gets a unit-variance score, so
  the input reorders the head);
* the member term is where the members disagree, with a per-class logit spread :math:`\sigma(x)`:

  .. math::

      \ln\sigma(x) = \ln\sigma_{\text{in}} + \rho \tanh(\hat h^\top x)
                     + \kappa \max\!\big(0, \lVert x\rVert/\sqrt{D} - 1\big),

  varying smoothly inside the domain (the :math:`\rho` term, so that the members' knowledge uncertainty has
  a ranking worth copying) and growing with the distance from the in-domain inputs (the :math:`\kappa`
  term), as deep ensembles disagree more away from their training data.

Out-of-domain (OOD) inputs are :math:`x \sim \mathcal{N}(0, r^2 I)` with ``ood_scale`` :math:`r`. The
students' transfer set mixes in auxiliary inputs of random radius between 1 and ``aux_max_scale``, so the
student sees where the members disagree (as the ensemble-distribution-distillation literature does with
auxiliary data); the OOD test inputs are fresh draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Member = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EnsembleSpec:
    """Parameters of :class:`SyntheticEnsemble` (symbols of the module docstring)."""

    num_classes: int  # K
    num_members: int = 5  # M
    input_dim: int = 16  # D
    feature_dim: int = 32  # F
    zipf_exponent: float = 1.0  # s
    context_scale: float = 3.0  # tau, logit std of the shared input-dependent part
    disagreement: float = 0.5  # sigma_in, median member logit spread in the domain
    disagreement_variation: float = 0.8  # rho
    distance_gain: float = 1.0  # kappa
    ood_scale: float = 2.5  # r of the OOD inputs
    aux_fraction: float = 0.2  # share of auxiliary (wide-radius) inputs in the transfer set
    aux_max_scale: float = 3.0  # auxiliary inputs have a radius scale uniform in [1, aux_max_scale]


def _features(x: Tensor, proj: Tensor) -> Tensor:
    """``tanh(x U^T)`` normalised to unit norm per input, ``[n, F]``."""
    f = torch.tanh(x @ proj.T)  # [n, F]
    return f / f.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(f.dtype).tiny)


class SyntheticEnsemble:
    """The ``M`` members of the module docstring for one ``spec`` and ``seed`` (all weights drawn here)."""

    def __init__(self, spec: EnsembleSpec, seed: int) -> None:
        self.spec = spec
        g = torch.Generator().manual_seed(seed)
        d, f, k, m = spec.input_dim, spec.feature_dim, spec.num_classes, spec.num_members
        ranks = torch.arange(1, k + 1, dtype=torch.float32)
        self.prior = -spec.zipf_exponent * ranks.log()  # [K]
        self.proj = torch.randn(f, d, generator=g) / math.sqrt(d)  # [F, D]
        self.embed = torch.randn(k, f, generator=g)  # [K, F]
        self.member_proj = torch.randn(m, f, d, generator=g) / math.sqrt(d)  # [M, F, D]
        self.member_embed = torch.randn(m, k, f, generator=g)  # [M, K, F]
        direction = torch.randn(d, generator=g)
        self.direction = direction / direction.norm()  # [D], h-hat

    def log_disagreement(self, x: Tensor) -> Tensor:
        """``ln sigma(x)``, ``[n]``."""
        s = self.spec
        radius = x.norm(dim=-1) / math.sqrt(s.input_dim)  # [n], about 1 in the domain
        return (
            math.log(s.disagreement)
            + s.disagreement_variation * torch.tanh(x @ self.direction)
            + s.distance_gain * (radius - 1.0).clamp(min=0.0)
        )

    def shared_logits(self, x: Tensor) -> Tensor:
        """The members' common part, Zipf prior + input-dependent scores, ``[n, K]``."""
        return self.prior + self.spec.context_scale * (_features(x, self.proj) @ self.embed.T)

    def member(self, index: int) -> Member:
        """Member ``index`` as a function ``x [n, D] -> logits [n, K]``."""

        def logits(x: Tensor) -> Tensor:
            spread = self.log_disagreement(x).exp()[:, None]  # [n, 1]
            own = _features(x, self.member_proj[index]) @ self.member_embed[index].T  # [n, K]
            return self.shared_logits(x) + spread * own

        return logits

    def members(self) -> list[Member]:
        """All ``M`` members."""
        return [self.member(i) for i in range(self.spec.num_members)]


def in_domain_inputs(spec: EnsembleSpec, n: int, gen: torch.Generator) -> Tensor:
    """``n`` in-domain inputs ``[n, D]``, ``N(0, I)``."""
    return torch.randn(n, spec.input_dim, generator=gen)


def ood_inputs(spec: EnsembleSpec, n: int, gen: torch.Generator) -> Tensor:
    """``n`` OOD inputs ``[n, D]``, ``N(0, ood_scale^2 I)``."""
    return spec.ood_scale * torch.randn(n, spec.input_dim, generator=gen)


def transfer_inputs(spec: EnsembleSpec, n: int, gen: torch.Generator) -> Tensor:
    """``n`` transfer inputs ``[n, D]``: in-domain, except a share ``aux_fraction`` of auxiliary inputs whose
    radius is scaled by a factor uniform in ``[1, aux_max_scale]``."""
    x = torch.randn(n, spec.input_dim, generator=gen)
    aux = torch.rand(n, generator=gen) < spec.aux_fraction  # [n]
    scale = 1.0 + (spec.aux_max_scale - 1.0) * torch.rand(n, generator=gen)  # [n]
    return torch.where(aux[:, None], x * scale[:, None], x)
