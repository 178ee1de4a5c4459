r"""Shared numerics of :mod:`proxy_end2.uncertainty` and :mod:`proxy_end2.losses` (private module).

One copy of each piece: the constants, the row chunking of ``[..., K]`` passes, :math:`x\ln x` from
:math:`\ln x`, and the special-function remainders with their asymptotic series.

Remainders (for :math:`x > 0`):

.. math::

    r(x) = \psi(x) - \ln x, \qquad s(x) = \psi(x + 1) - \ln x = r(x) + 1/x, \\
    \phi(x) = \ln\Gamma(x) - (x - \tfrac12)\ln x + x - \tfrac12\ln 2\pi, \qquad t(x) = x\,\psi'(x) - 1.

Each is evaluated directly (``torch.digamma``/``lgamma``/``polygamma``) for :math:`x < 10` and with its
asymptotic series (Abramowitz & Stegun 6.1.41, 6.3.18, 6.4.12) for :math:`x \ge 10`, where the series'
truncation error is below float64 round-off. The series take :math:`1/x` and :math:`1/x^2` so that callers
that need several of them share those powers.

Pure torch, no fairseq.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

#: :math:`\ln 2\pi`
LN_2PI = math.log(2.0 * math.pi)
#: the series below are used for ``x >= ASYMPTOTIC_MIN``; their truncation error is < 1e-16 relative there
ASYMPTOTIC_MIN = 10.0
#: ``torch.finfo(torch.float32).eps`` = 2^-23, the authors' constant in the proxy precision
FLOAT32_EPS = 2.0**-23

#: Row-chunk size (elements) of the ``[..., K]`` passes of the statistics and of the losses, by device:
#: ``2**20`` on CPU (chunk-sized float64 temporaries of 8 MB are reused from glibc's heap instead of being
#: ``mmap``-ed and page-faulted at every allocation), ``2**24`` elsewhere (on a GPU, small chunks mean many
#: small kernel launches and per-chunk work on ``[n, 1]`` tensors). ``None`` picks by device; an int overrides
#: it (tests, benchmarks: ``benchmarks/teacher_statistics.py --chunk-elements``).
CHUNK_ELEMENTS: int | None = None
CHUNK_ELEMENTS_CPU = 1 << 20
CHUNK_ELEMENTS_GPU = 1 << 24


# ------------------------------------------------------------------------------------------------------
# Row chunking
# ------------------------------------------------------------------------------------------------------
def chunk_elements(device: torch.device) -> int:
    """Elements per row chunk of a ``[..., K]`` pass on ``device`` (see :data:`CHUNK_ELEMENTS`)."""
    if CHUNK_ELEMENTS is not None:
        return int(CHUNK_ELEMENTS)
    return CHUNK_ELEMENTS_CPU if torch.device(device).type == "cpu" else CHUNK_ELEMENTS_GPU


def row_slices(num_rows: int, num_classes: int, device: torch.device, max_elements: int | None = None) -> list[slice]:
    """Row ranges of at most ``max_elements`` (default :func:`chunk_elements`) elements, at least one row each,
    of a ``[num_rows, K]`` tensor."""
    elements = chunk_elements(device) if max_elements is None else int(max_elements)
    rows = max(1, elements // max(1, num_classes))
    return [slice(i, min(i + rows, num_rows)) for i in range(0, num_rows, rows)]


def rowwise_sum(fn: Callable[..., Tensor], *tensors: Tensor, max_elements: int | None = None) -> Tensor:
    """``fn(*row_chunks).sum(-1)`` over row chunks (of at most ``max_elements`` elements, default
    :func:`chunk_elements`) of ``[..., K]`` tensors of one shape: the ``[..., K]`` temporaries of ``fn`` are
    bounded by the chunk size. Returns ``[...]`` (per-row sums are the same as on the whole tensor)."""
    first = tensors[0]
    k = first.shape[-1]
    if first.numel() == 0:
        return fn(*tensors).sum(-1)
    flat = [t.reshape(-1, k) for t in tensors]  # views for contiguous statistics
    out = torch.empty(flat[0].shape[0], dtype=first.dtype, device=first.device)
    for rows in row_slices(out.shape[0], k, first.device, max_elements):
        out[rows] = fn(*(t[rows] for t in flat)).sum(-1)
    return out.reshape(first.shape[:-1])


def xlogx_from_log(log_x: Tensor) -> Tensor:
    r"""Elementwise :math:`x \ln x` from :math:`\ln x`, with the convention :math:`0 \ln 0 = 0`.

    ``exp(-inf) * -inf`` would be NaN; clamping the log at the dtype's most negative finite value makes
    the product ``0 * (-finfo.max) = 0`` instead, without changing any value whose ``exp`` is non-zero.
    """
    return log_x.exp() * log_x.clamp(min=torch.finfo(log_x.dtype).min)


# ------------------------------------------------------------------------------------------------------
# Asymptotic series (x >= ASYMPTOTIC_MIN), from inv = 1/x and i2 = 1/x^2
# ------------------------------------------------------------------------------------------------------
def series_r(inv: Tensor, i2: Tensor) -> Tensor:
    r""":math:`r(x) \sim -\frac{1}{2x} - \frac{1}{12x^2} + \frac{1}{120x^4} - \frac{1}{252x^6}
    + \frac{1}{240x^8} - \frac{1}{132x^{10}} + \frac{691}{32760x^{12}} - \frac{1}{12x^{14}}`."""
    return -0.5 * inv - i2 * (
        1 / 12 - i2 * (1 / 120 - i2 * (1 / 252 - i2 * (1 / 240 - i2 * (1 / 132 - i2 * (691 / 32760 - i2 / 12)))))
    )


def series_phi(inv: Tensor, i2: Tensor) -> Tensor:
    r""":math:`\phi(x) \sim \frac{1}{12x} - \frac{1}{360x^3} + \frac{1}{1260x^5} - \frac{1}{1680x^7}
    + \frac{1}{1188x^9} - \frac{691}{360360x^{11}} + \frac{1}{156x^{13}} - \frac{3617}{122400x^{15}}`."""
    inner = 691 / 360360 - i2 * (1 / 156 - i2 * 3617 / 122400)  # x^-11 .. x^-15 terms
    return inv * (1 / 12 - i2 * (1 / 360 - i2 * (1 / 1260 - i2 * (1 / 1680 - i2 * (1 / 1188 - i2 * inner)))))


def series_t(inv: Tensor, i2: Tensor) -> Tensor:
    r""":math:`t(x) \sim \frac{1}{2x} + \frac{1}{6x^2} - \frac{1}{30x^4} + \frac{1}{42x^6} - \frac{1}{30x^8}
    + \frac{5}{66x^{10}} - \frac{691}{2730x^{12}} + \frac{7}{6x^{14}} - \frac{3617}{510x^{16}}`."""
    inner = 5 / 66 - i2 * (691 / 2730 - i2 * (7 / 6 - i2 * 3617 / 510))  # x^-10 .. x^-16 terms
    return 0.5 * inv + i2 * (1 / 6 - i2 * (1 / 30 - i2 * (1 / 42 - i2 * (1 / 30 - i2 * inner))))


def asymptotic_series(x: Tensor, with_t: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""The series of :math:`r(x)`, :math:`\phi(x)` and (if ``with_t``) :math:`t(x)` for ``x >= 10``,
    sharing :math:`1/x` and :math:`1/x^2`."""
    inv = x.reciprocal()
    i2 = inv * inv
    return series_r(inv, i2), series_phi(inv, i2), series_t(inv, i2) if with_t else None


# ------------------------------------------------------------------------------------------------------
# Remainders for any x > 0 (elementwise, autograd-friendly, any floating dtype)
# ------------------------------------------------------------------------------------------------------
def _split(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mask of the asymptotic region and two safe copies of ``x`` (one per branch), so that neither branch
    of the final ``torch.where`` produces inf/NaN that would poison the gradient of the other."""
    big = x >= ASYMPTOTIC_MIN
    x_big = torch.where(big, x, torch.full_like(x, ASYMPTOTIC_MIN))
    x_small = torch.where(big, torch.ones_like(x), x)
    return big, x_big, x_small


def digamma_minus_log(x: Tensor) -> Tensor:
    r""":math:`r(x) = \psi(x) - \ln x` for :math:`x > 0`."""
    big, xb, xs = _split(x)
    inv = xb.reciprocal()
    return torch.where(big, series_r(inv, inv * inv), torch.digamma(xs) - torch.log(xs))


def digamma1p_minus_log(x: Tensor) -> Tensor:
    r""":math:`s(x) = \psi(x + 1) - \ln x = r(x) + 1/x` for :math:`x > 0`.

    Computed as ``digamma(x + 1) - log(x)`` below 10 (no cancellation of the :math:`1/x` pole for tiny
    ``x``) and as ``r(x) + 1/x`` above.
    """
    big, xb, xs = _split(x)
    series = digamma_minus_log(xb) + xb.reciprocal()
    return torch.where(big, series, torch.digamma(xs + 1.0) - torch.log(xs))


def lgamma_stirling_remainder(x: Tensor) -> Tensor:
    r""":math:`\phi(x) = \ln\Gamma(x) - (x - \tfrac12)\ln x + x - \tfrac12\ln 2\pi` for :math:`x > 0`."""
    big, xb, xs = _split(x)
    inv = xb.reciprocal()
    direct = torch.lgamma(xs) - (xs - 0.5) * torch.log(xs) + xs - 0.5 * LN_2PI
    return torch.where(big, series_phi(inv, inv * inv), direct)


def x_trigamma_minus_one(x: Tensor) -> Tensor:
    r""":math:`t(x) = x\,\psi'(x) - 1` for :math:`x > 0`.

    Note:
        Below 10 this uses ``torch.polygamma(1, x)``, whose float64 CPU implementation is accurate to
        only about 1e-9 relative near :math:`x \approx 1` (a short asymptotic series after 6 recurrence
        steps). Only the analytic gradient of the proxy loss uses it; 1e-9 is far below float32
        parameter resolution.
    """
    big, xb, xs = _split(x)
    inv = xb.reciprocal()
    return torch.where(big, series_t(inv, inv * inv), xs * torch.polygamma(1, xs) - 1.0)
