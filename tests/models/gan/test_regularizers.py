"""Gradient penalty, R1 and drift on toy discriminators with known gradients; lazy regularization and EMA numbers."""

import math

import pytest
import torch
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.gan.regularizers import (
    drift_penalty,
    ema_beta,
    gradient_penalty,
    lazy_regularization,
    r1_gamma_heuristic,
    r1_penalty,
)


def linear_critic(w: torch.Tensor):
    """D(x) = <w, x> per image: its gradient is w at every x."""
    return lambda x: (x * w).flatten(1).sum(dim=1)


def test_gradient_penalty_of_a_linear_critic_is_exact():
    w = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])  # ||w|| = 5
    real = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    fake = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    penalty = gradient_penalty(linear_critic(w), real, fake, torch.Generator().manual_seed(0))
    assert penalty.item() == pytest.approx((5.0 - 1.0) ** 2, rel=1e-6)
    unit = w / 5.0
    unit_penalty = gradient_penalty(linear_critic(unit), real, fake, torch.Generator().manual_seed(0))
    assert unit_penalty.item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_interpolates_with_seeded_eps():
    """With D(x) = sum(x^2) / 2 the gradient is x_hat itself, so the penalty reveals the eps the generator drew."""
    real = torch.ones(4, 3)
    fake = torch.zeros(4, 3)
    critic = lambda x: 0.5 * x.square().sum(dim=1)  # noqa: E731
    eps = torch.rand(4, generator=torch.Generator().manual_seed(7))
    expected = ((eps * math.sqrt(3.0)) - 1.0).square().mean()  # ||x_hat|| = eps * sqrt(3)
    first = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(7))
    again = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(7))
    other = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(8))
    assert first.item() == pytest.approx(expected.item(), rel=1e-6)
    assert first.item() == again.item()
    assert other.item() != first.item()


def test_gradient_penalty_trains_the_discriminator_and_not_the_generator():
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1))
    gen = nn.Linear(4, 12)
    fake = gen(torch.randn(5, 4)).view(5, 3, 2, 2)
    real = torch.randn(5, 3, 2, 2)
    penalty = gradient_penalty(lambda x: disc(x).squeeze(1), real, fake, torch.Generator().manual_seed(0))
    penalty.backward()
    assert penalty.item() > 0
    # every parameter the input gradient depends on gets a gradient (the last bias does not enter grad_x D)
    for param in (disc[1].weight, disc[1].bias, disc[3].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert all(p.grad is None for p in gen.parameters())


def test_gradient_penalty_with_labels_bound_by_a_lambda():
    w = torch.tensor([[1.0, 2.0], [2.0, 0.0]])  # one weight row per class
    labels = torch.tensor([0, 1, 0])
    critic = lambda x: (x * w[labels]).sum(dim=1)  # noqa: E731
    penalty = gradient_penalty(critic, torch.randn(3, 2), torch.randn(3, 2), torch.Generator().manual_seed(0))
    expected = ((math.sqrt(5.0) - 1) ** 2 * 2 + (2.0 - 1) ** 2) / 3
    assert penalty.item() == pytest.approx(expected, rel=1e-6)


def test_gradient_penalty_refuses_mismatched_batches():
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(linear_critic(torch.ones(2)), torch.zeros(3, 2), torch.zeros(4, 2))


def test_r1_penalty_by_hand():
    """D(x) = sum(x^2): grad 2x, so the penalty is mean ||2x||^2 = 4 * mean sum x^2."""
    x = torch.tensor([[[1.0, 2.0]], [[0.0, -3.0]]], requires_grad=True)  # [2, 1, 2]
    logits = x.square().flatten(1).sum(dim=1)
    penalty = r1_penalty(logits, x)
    assert penalty.item() == pytest.approx((4 * (1 + 4) + 4 * 9) / 2)  # 28


def test_r1_penalty_keeps_a_graph_into_the_discriminator():
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.Softplus(), nn.Linear(6, 1))
    real = torch.randn(4, 2, 2, 2).requires_grad_(True)
    penalty = r1_penalty(disc(real).squeeze(1), real)
    penalty.backward()
    # every parameter the input gradient depends on gets a gradient (the last bias does not enter grad_x D)
    for param in (disc[1].weight, disc[1].bias, disc[3].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_r1_penalty_needs_images_that_require_grad():
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="requires_grad_"):
        r1_penalty(x.sum(dim=1), x)


def test_drift_penalty_by_hand():
    assert drift_penalty(torch.tensor([1.0, -3.0])).item() == pytest.approx(5.0)


def test_r1_gamma_heuristic_matches_stylegan2_ada_auto():
    assert r1_gamma_heuristic(256, 64) == pytest.approx(0.0002 * 256 * 256 / 64)  # 0.2048
    assert r1_gamma_heuristic(32, 64) == pytest.approx(0.0032)
    with pytest.raises(GenResearchError, match="batch_size=0"):
        r1_gamma_heuristic(32, 0)


def test_lazy_regularization_for_d_every_16_steps():
    lr, (beta1, beta2) = lazy_regularization(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert beta1 == 0.0
    assert beta2 == pytest.approx(0.99 ** (16 / 17))
    assert lr == pytest.approx(0.002352941176, rel=1e-9)


def test_lazy_regularization_for_g_every_4_steps():
    lr, betas = lazy_regularization(0.002, (0.5, 0.99), 4)
    assert lr == pytest.approx(0.002 * 0.8)
    assert betas == pytest.approx((0.5**0.8, 0.99**0.8))


@pytest.mark.parametrize("interval", [0, 1])
def test_lazy_regularization_every_step_or_never_changes_nothing(interval):
    assert lazy_regularization(0.0025, (0.0, 0.99), interval) == (0.0025, (0.0, 0.99))


@pytest.mark.parametrize("interval", [-1, 2.5, True, "16"])
def test_lazy_regularization_refuses_a_bad_interval(interval):
    with pytest.raises(GenResearchError) as info:
        lazy_regularization(0.0025, (0.0, 0.99), interval)
    assert "\n" not in str(info.value) and "interval" in str(info.value)


def test_ema_beta_nvlabs_cifar_during_rampup():
    """cifar: batch 64, 500 kimg, rampup 0.05; at 10k images the half-life is min(500000, 500) = 500 images."""
    beta = ema_beta(64, 500, images_seen=10_000, rampup=0.05)
    assert beta == pytest.approx(0.5 ** (64 / 500))
    assert ema_beta(64, 500, images_seen=100_000_000, rampup=0.05) == pytest.approx(0.5 ** (64 / 500_000))


def test_ema_beta_without_rampup_and_at_the_start():
    assert ema_beta(32, 10) == pytest.approx(0.5 ** (32 / 10_000))  # rosinality's constant, at its batch 32
    assert ema_beta(64, 500, images_seen=0, rampup=0.05) == 0.0  # nothing seen yet: the EMA copies G
    assert ema_beta(64, 0) == 0.0


def test_ema_beta_is_batch_size_invariant():
    """The decay per image is the same: two steps of batch 32 decay as much as one step of batch 64."""
    for half_life in (10, 20, 500):
        assert ema_beta(32, half_life) ** 2 == pytest.approx(ema_beta(64, half_life), rel=1e-12)
        # and the half-life holds: after half_life_kimg * 1000 images, half the weight is left
        assert ema_beta(64, half_life) ** (half_life * 1000 / 64) == pytest.approx(0.5)


def test_ema_beta_refuses_bad_settings():
    with pytest.raises(GenResearchError, match="batch_size=0"):
        ema_beta(0, 10)
    with pytest.raises(GenResearchError, match="half-life"):
        ema_beta(32, -1)
    with pytest.raises(GenResearchError, match="rampup"):
        ema_beta(32, 10, images_seen=5, rampup=0.0)
    with pytest.raises(ValueError, match="images_seen"):
        ema_beta(32, 10, rampup=0.05)
