"""DiffAugment: each op does what the reference code does, draws only from the given generator, keeps gradients,
and the GANs apply it to what D sees in training."""

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.gan.diffaugment import brightness, contrast, cutout, diff_augment, parse_policy, saturation, translation


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_color_ops_match_their_formulas():
    x = torch.randn(4, 3, 8, 8)
    u = torch.rand(4, 1, 1, 1, generator=gen())
    torch.testing.assert_close(brightness(x, gen()), x + (u - 0.5))
    mean = x.mean(1, keepdim=True)
    torch.testing.assert_close(saturation(x, gen()), (x - mean) * (u * 2) + mean)
    mean = x.mean([1, 2, 3], keepdim=True)
    torch.testing.assert_close(contrast(x, gen()), (x - mean) * (u + 0.5) + mean)


def test_translation_shifts_whole_images_with_zero_fill():
    x = torch.arange(64.0).view(1, 1, 8, 8) + 1  # no zeros inside
    for seed in range(20):
        y = translation(x, gen(seed))
        shifted = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)
                   if torch.equal(y[0, 0, max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)],
                                  x[0, 0, max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)])]
        assert shifted, "the output is a shift of the input by at most 1/8 of the side"
        assert (y == 0).sum() == 64 - (8 - abs(shifted[0][0])) * (8 - abs(shifted[0][1]))  # the rest is zero fill


def test_cutout_zeroes_one_square_of_half_the_side():
    x = torch.ones(16, 1, 8, 8)
    y = cutout(x, gen())
    zeros = (y == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 16)).all()  # a 4x4 square, clipped at the border


def test_draws_come_from_the_generator_only_and_gradients_flow():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    policy = parse_policy("color,translation,cutout")
    state = torch.get_rng_state()
    a, b = diff_augment(x, policy, gen(3)), diff_augment(x, policy, gen(3))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(GenResearchError, match="unknown policy 'flip'"):
        parse_policy("color,flip")
    assert parse_policy(None) == () and parse_policy("") == ()


def test_the_gan_augments_what_the_discriminator_sees():
    from gen_research.models.gan import DCGAN

    torch.manual_seed(0)
    model = DCGAN(image_shape=(1, 8, 8), latent_dim=8, base_channels=8, diffaugment="translation,cutout")
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    seen = []
    model.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    model.critic(images, None)
    assert not torch.equal(seen[0], images)  # augmented
    with pytest.raises(GenResearchError, match="unknown policy"):
        DCGAN(image_shape=(1, 8, 8), latent_dim=8, base_channels=8, diffaugment="colour")
