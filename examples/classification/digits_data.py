"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, bundled with sklearn: no download),
split into train / valid / test, with two out-of-distribution versions of the test images and auxiliary
transfer images.

* OOD ``rotated``: test digits rotated by 90 degrees (same strokes and ink, unfamiliar shapes);
* OOD ``inverted``: test digits with inverted intensities, ``1 - x`` (ink on a bright background);
* auxiliary transfer images: convex mixtures ``lam x_i + (1 - lam) x_j`` of two training digits of
  different classes, ``lam`` uniform in ``[MIX_LOW, MIX_HIGH]``. They teach the students what the
  teachers do between the classes (where they disagree); they are not the OOD test transformations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import Tensor

#: Pixel values of load_digits are integers 0..16.
PIXEL_MAX = 16.0
IMAGE_SIZE = 8
NUM_CLASSES = 10
#: Held-out sizes (the rest, 1,097 images, is the training set).
VALID_SIZE = 200
TEST_SIZE = 500
#: Range of the mixing weight of the auxiliary images.
MIX_LOW, MIX_HIGH = 0.3, 0.7


@dataclass(frozen=True)
class DigitSplits:
    """Images ``[N, 64]`` in [0, 1] and labels ``[N]`` (int64) of each split."""

    train_x: Tensor
    train_y: Tensor
    valid_x: Tensor
    valid_y: Tensor
    test_x: Tensor
    test_y: Tensor


def load_digit_splits(seed: int) -> DigitSplits:
    """A random (``seed``) train / valid / test split of the 1,797 digits."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / PIXEL_MAX  # [1797, 64]
    y = torch.tensor(data.target, dtype=torch.int64)  # [1797]
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    test, valid, train = order[:TEST_SIZE], order[TEST_SIZE : TEST_SIZE + VALID_SIZE], order[TEST_SIZE + VALID_SIZE :]
    return DigitSplits(x[train], y[train], x[valid], y[valid], x[test], y[test])


def rotated(images: Tensor) -> Tensor:
    """Each ``[N, 64]`` image rotated by 90 degrees."""
    square = images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)  # [N, 8, 8]
    return torch.rot90(square, 1, dims=(1, 2)).reshape(images.shape[0], -1)


def inverted(images: Tensor) -> Tensor:
    """``1 - x``: dark strokes on a bright background."""
    return 1.0 - images


def mixed_pairs(images: Tensor, labels: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` auxiliary images ``[n, 64]``: mixtures of two training images of different classes."""
    first = torch.randint(images.shape[0], (n,), generator=gen)
    second = torch.randint(images.shape[0], (n,), generator=gen)
    same = labels[first] == labels[second]
    while bool(same.any()):  # redraw the partners of same-class pairs (10 classes: a few rounds)
        second[same] = torch.randint(images.shape[0], (int(same.sum()),), generator=gen)
        same = labels[first] == labels[second]
    lam = MIX_LOW + (MIX_HIGH - MIX_LOW) * torch.rand(n, 1, generator=gen)  # [n, 1]
    return lam * images[first] + (1.0 - lam) * images[second]
