"""Unit tests of the examples' shared toolkit (examples/many_classes/distil_kit): hand-computed values and
agreement with the library's stacked-logits API."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import example_helpers  # noqa: F401  (puts the examples' folders on sys.path)
from distil_kit.assessment import assess_ensemble
from distil_kit.calibration import expected_calibration_error
from distil_kit.gradients import head_shares, logit_gradients
from distil_kit.objectives import LOSS_NAMES, per_position_loss
from distil_kit.reporting import summarise
from distil_kit.transfer import TransferSet, teacher_statistics
from proxy_end2.losses import dirichlet_nll_loss, ensemble_kl_loss, proxy_dirichlet_loss
from proxy_end2.uncertainty import ensemble_statistics, proxy_target_precision


def test_head_shares_by_hand():
    # classes ordered by pbar; 90% of the mass needs the first two classes
    log_pbar = torch.tensor([[0.6, 0.35, 0.04, 0.01]]).log()
    grad = torch.tensor([[1.0, 2.0, 2.0, 4.0]])  # squared norm 25
    shares = head_shares(grad, log_pbar, head_sizes=(1, 5))
    assert shares["top1"].item() == pytest.approx(1 / 25)
    assert shares["top5"].item() == pytest.approx(1.0)  # K = 4 < 5: every class is in the head
    assert shares["mass90"].item() == pytest.approx(5 / 25)
    assert shares["tail_mass90"].item() == pytest.approx(20 / 25)
    assert shares["mass90_size"].item() == 2


def test_streamed_statistics_equal_stacked():
    torch.manual_seed(0)
    x = torch.randn(7, 3)
    weights = [torch.randn(3, 5) for _ in range(4)]
    members = [lambda inputs, w=w: inputs @ w for w in weights]
    streamed = teacher_statistics(members, x, batch_size=3)  # 3 row batches, members one at a time
    stacked = ensemble_statistics(torch.stack([m(x) for m in members], dim=-2))  # [7, 4, 5]
    for name in ("log_mean_probs", "mean_log_probs", "expected_entropy"):
        torch.testing.assert_close(getattr(streamed, name), getattr(stacked, name))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_objectives_are_the_library_losses(name):
    torch.manual_seed(1)
    teachers = 2.0 * torch.randn(6, 3, 9)  # [N, M, K]
    z = torch.randn(6, 9)
    expected = {
        "proxy": lambda: proxy_dirichlet_loss(z, teachers, model_offset=1.0, target_offset=1.0, precision="mkl"),
        "end2": lambda: dirichlet_nll_loss(z, teachers, model_offset=1.0),
        "end2_c0": lambda: dirichlet_nll_loss(z, teachers, model_offset=0.0),
        "kl": lambda: ensemble_kl_loss(z, teachers),
    }[name]()
    torch.testing.assert_close(per_position_loss(name, z, ensemble_statistics(teachers)), expected)


class _FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_proxy_gradient_vanishes_at_its_stationary_point():
    # the README's statement: with offset 1 the proxy loss is stationary at exp(z) = B pbar, softmax(z) = pbar
    torch.manual_seed(2)
    stats = ensemble_statistics(torch.randn(5, 4, 12, dtype=torch.float64))
    b = proxy_target_precision(stats, precision="mkl", target_offset=1.0)  # [5]
    z = (b[:, None] * stats.mean_probs()).log()  # [5, 12]
    probe = TransferSet(torch.zeros(5, 1), stats)
    grad = logit_gradients(_FixedLogits(z), "proxy", probe)
    assert grad.abs().max().item() < 1e-8
    moved = logit_gradients(_FixedLogits(z + 0.1 * torch.randn_like(z)), "proxy", probe)
    assert moved.abs().max().item() > 1e-4


def test_ece_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]])
    labels = torch.tensor([0, 1, 0])
    # bins of 1/15: confidences 0.9, 0.6, 0.8 fall in different bins; |conf - acc| = 0.1, 0.6, 0.2
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.6 + 0.2) / 3)


def test_uniform_reference_is_log_k_minus_entropy():
    stats = ensemble_statistics(torch.randn(8, 3, 6))
    test = TransferSet(torch.zeros(8, 1), stats)
    pbar = stats.mean_probs().double()
    entropy = -(pbar * pbar.log()).sum(-1)
    assert assess_ensemble(test, {})["kl_uniform"] == pytest.approx(float((math.log(6) - entropy).mean()), abs=1e-6)


def test_summarise_skips_non_finite_values():
    s = summarise([1.0, 2.0, 3.0, float("nan")])
    assert (s["mean"], s["std"], s["n"], s["n_nonfinite"]) == (2.0, 1.0, 3, 1)
    assert np.isnan(summarise([float("inf")])["mean"])
