r"""The low-K toy setting in which EnD\ :sup:`2` was introduced: a 2-D, 3-class spiral.

Class :math:`c` has points at radius :math:`r \sim U(0, 1)` and angle
:math:`\theta = \frac{2\pi c}{3} + \text{TWIST}\cdot r + \mathcal{N}(0, \text{ANGLE\_NOISE}^2)`: three
interleaved arms inside the unit disc that overlap near the centre (data uncertainty) and leave empty space
around them (where an ensemble's members extrapolate differently: knowledge uncertainty).

* auxiliary transfer inputs: uniform on the square ``[-AUX_EXTENT, AUX_EXTENT]^2``, so the students see
  the teachers away from the data too (as ensemble distribution distillation does with auxiliary data);
* OOD test inputs: uniform on the ring ``OOD_RADII`` around the data (inside the auxiliary square: this
  measures how faithfully a student copies the ensemble there, not extrapolation beyond what it saw);
* a regular grid over the auxiliary square for the uncertainty maps.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

NUM_CLASSES = 3
TWIST = 4.0  # radians of turn from the centre to radius 1
ANGLE_NOISE = 0.5  # radians: neighbouring arms overlap (data uncertainty)
AUX_EXTENT = 2.0
OOD_RADII = (1.4, 2.0)


def spiral(n_per_class: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n_per_class`` points per arm: inputs ``[3n, 2]`` and labels ``[3n]``."""
    xs, ys = [], []
    for c in range(NUM_CLASSES):
        r = torch.rand(n_per_class, generator=gen)
        theta = 2 * math.pi * c / NUM_CLASSES + TWIST * r + ANGLE_NOISE * torch.randn(n_per_class, generator=gen)
        xs.append(torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1))
        ys.append(torch.full((n_per_class,), c, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def auxiliary_inputs(n: int, gen: torch.Generator) -> Tensor:
    """``n`` points ``[n, 2]`` uniform on the auxiliary square."""
    return AUX_EXTENT * (2.0 * torch.rand(n, 2, generator=gen) - 1.0)


def ood_inputs(n: int, gen: torch.Generator) -> Tensor:
    """``n`` points ``[n, 2]`` uniform (in area) on the OOD ring."""
    lo, hi = OOD_RADII
    r = torch.sqrt(lo**2 + (hi**2 - lo**2) * torch.rand(n, generator=gen))
    theta = 2 * math.pi * torch.rand(n, generator=gen)
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


def grid(resolution: int) -> tuple[Tensor, Tensor, Tensor]:
    """A ``resolution x resolution`` grid over the auxiliary square: inputs ``[R*R, 2]`` and the two
    coordinate vectors ``[R]`` (for plotting)."""
    axis = torch.linspace(-AUX_EXTENT, AUX_EXTENT, resolution)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1), axis, axis
