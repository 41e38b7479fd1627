"""The GAN losses against hand-computed values, and the minimax generator's vanishing gradient."""

import math

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.gan.losses import LOSSES, check_loss, discriminator_loss, generator_loss

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0, 1.0])  # a different batch size: each term is its own mean


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_losses_are_the_five_names():
    assert LOSSES == ("non_saturating", "minimax", "hinge", "least_squares", "wasserstein")


@pytest.mark.parametrize("kind", ["non_saturating", "minimax"])
def test_bce_discriminator_loss_by_hand(kind):
    expected = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0) + softplus(1.0)) / 3
    assert discriminator_loss(kind, REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_bce_discriminator_loss_is_cross_entropy():
    sig = torch.sigmoid
    expected = -torch.log(sig(REAL)).mean() - torch.log(1 - sig(FAKE)).mean()
    assert discriminator_loss("non_saturating", REAL, FAKE).item() == pytest.approx(expected.item(), rel=1e-6)


def test_hinge_discriminator_loss_by_hand():
    # real: relu(1-2)=0, relu(1+1)=2 -> mean 1; fake: relu(1.5)=1.5, relu(-2)=0, relu(2)=2 -> mean 3.5/3
    assert discriminator_loss("hinge", REAL, FAKE).item() == pytest.approx(1.0 + 3.5 / 3, rel=1e-6)


def test_least_squares_discriminator_loss_by_hand():
    # real: 0.5*((1)^2 + (-2)^2)/2 = 1.25; fake: 0.5*(0.25 + 9 + 1)/3
    assert discriminator_loss("least_squares", REAL, FAKE).item() == pytest.approx(1.25 + 0.5 * 10.25 / 3, rel=1e-6)


def test_wasserstein_discriminator_loss_by_hand():
    assert discriminator_loss("wasserstein", REAL, FAKE).item() == pytest.approx(-1.5 / 3 - 0.5, rel=1e-6)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("non_saturating", (softplus(-0.5) + softplus(3.0) + softplus(-1.0)) / 3),
        ("minimax", -(softplus(0.5) + softplus(-3.0) + softplus(1.0)) / 3),
        ("hinge", 1.5 / 3),
        ("wasserstein", 1.5 / 3),
        ("least_squares", 0.5 * (0.25 + 16.0 + 0.0) / 3),
    ],
)
def test_generator_losses_by_hand(kind, expected):
    assert generator_loss(kind, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_minimax_generator_loss_is_log_one_minus_d():
    expected = torch.log(1 - torch.sigmoid(FAKE)).mean()
    assert generator_loss("minimax", FAKE).item() == pytest.approx(expected.item(), rel=1e-6)


def test_patch_logits_average_over_every_element():
    real = torch.full((2, 1, 3, 3), 0.25)
    fake = torch.full((4, 1, 3, 3), -0.75)
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(0.75 + 0.25)
    assert generator_loss("least_squares", fake).item() == pytest.approx(0.5 * 1.75**2)


def test_minimax_gradient_vanishes_where_non_saturating_does_not():
    """At a confident discriminator (fake logits -10), d loss / d logit is -sigmoid(l) ~ -4.5e-5 for minimax,
    -sigmoid(-l) ~ -1 for non-saturating: the classic figure of Goodfellow et al."""
    logits = torch.full((8,), -10.0, requires_grad=True)
    (minimax_grad,) = torch.autograd.grad(generator_loss("minimax", logits), logits)
    (ns_grad,) = torch.autograd.grad(generator_loss("non_saturating", logits), logits)
    per_logit_minimax = minimax_grad * 8  # undo the batch mean
    per_logit_ns = ns_grad * 8
    assert torch.allclose(per_logit_minimax, torch.full((8,), -torch.sigmoid(torch.tensor(-10.0)).item()))
    assert per_logit_minimax.abs().max().item() < 1e-4
    assert torch.allclose(per_logit_ns, torch.full((8,), -1.0), atol=1e-4)
    # both push the fake logit up (descent direction is +), they differ only in size
    assert (per_logit_minimax < 0).all() and (per_logit_ns < 0).all()


def test_hinge_is_zero_beyond_the_margin():
    real = torch.tensor([1.0, 1.5, 7.0], requires_grad=True)
    fake = torch.tensor([-1.0, -2.0, -9.0], requires_grad=True)
    loss = discriminator_loss("hinge", real, fake)
    assert loss.item() == 0.0
    loss.backward()
    assert real.grad.abs().sum().item() == 0.0 and fake.grad.abs().sum().item() == 0.0
    # inside the margin it is not zero
    assert discriminator_loss("hinge", torch.tensor([0.9]), torch.tensor([-2.0])).item() == pytest.approx(0.1, abs=1e-6)


def test_unknown_loss_is_one_line_with_a_suggestion():
    with pytest.raises(GenResearchError) as info:
        check_loss("non-saturating")
    message = str(info.value)
    assert "\n" not in message
    assert "model.init_args.loss" in message and "did you mean non_saturating?" in message
    assert all(name in message for name in LOSSES)
    with pytest.raises(GenResearchError, match="model.init_args.loss='wgan'"):
        discriminator_loss("wgan", REAL, FAKE)
    with pytest.raises(GenResearchError, match="model.init_args.loss"):
        generator_loss("lsgan", FAKE)
    check_loss("hinge")  # a known name passes
