"""The image-to-image families' losses against hand-computed cases, and their contract: any input size, targets
routed to the right generator, wrong targets and data refused in one line."""

import math
from types import SimpleNamespace

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.translation.cyclegan import CycleGAN
from gen_research.models.translation.family import match_channels, pad_to_multiple
from gen_research.models.translation.losses import discriminator_loss, domain_loss, gan_loss
from gen_research.models.translation.pix2pix import Pix2Pix
from gen_research.models.translation.stargan import StarGAN


def test_gan_loss_is_the_references_bce_or_mse_against_constant_maps():
    logits = torch.tensor([[0.0, 2.0]])
    assert gan_loss("vanilla", logits, True).item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2)
    assert gan_loss("vanilla", logits, False).item() == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2)
    squares = torch.tensor([0.5, -1.0])
    assert gan_loss("lsgan", squares, True).item() == pytest.approx((0.25 + 4.0) / 2)  # no 0.5: the reference's MSELoss
    assert gan_loss("lsgan", squares, False).item() == pytest.approx((0.25 + 1.0) / 2)
    assert discriminator_loss("lsgan", squares, squares).item() == pytest.approx(0.5 * (2.125 + 0.625))  # halved
    with pytest.raises(GenResearchError, match="gan_mode='wgan' must be one of vanilla, lsgan"):
        gan_loss("wgan", logits, True)


def test_domain_loss_is_cross_entropy_or_bce_summed_over_attributes():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    assert domain_loss(logits, torch.tensor([0]), multi_label=False).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)))
    attributes = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    wanted = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    per_batch = (2 * math.log(2) + math.log(1 + math.exp(-2)) + math.log(2)) / 2  # summed over attributes, mean over images
    assert domain_loss(attributes, wanted, multi_label=True).item() == pytest.approx(per_batch)


def test_padding_reflects_when_it_can_and_grey_rgb_converts_back_exactly():
    images = torch.arange(2 * 3 * 5, dtype=torch.float32).view(1, 2, 3, 5)
    padded, size = pad_to_multiple(images, 4)
    assert padded.shape == (1, 2, 4, 8) and size == (3, 5) and torch.equal(padded[..., :3, :5], images)
    assert torch.equal(padded[..., 3, :5], images[..., 1, :])  # reflection of the row above the last
    tiny, _ = pad_to_multiple(torch.ones(1, 1, 1, 1), 4)  # too small to reflect: edges replicated
    assert torch.equal(tiny, torch.ones(1, 1, 4, 4))
    grey = torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.allclose(match_channels(match_channels(grey, 3), 1), grey, atol=1e-6)


def test_pix2pix_translates_any_size_in_one_direction():
    model = Pix2Pix(image_shape=(1, 28, 28), ngf=2, ndf=2, n_layers_d=1).eval()
    assert model.size_multiple == 32 and model.receptive_field == 16
    by_field = Pix2Pix(image_shape=(1, 28, 28), ngf=2, ndf=2, receptive_field=30)  # the smallest PatchGAN covering 30 px
    assert by_field.receptive_field == 34 and by_field.hparams.n_layers_d == 3  # hparams keep what was given
    assert model.translate(torch.zeros(2, 1, 13, 9)).shape == (2, 1, 13, 9)
    with pytest.raises(GenResearchError, match="translates in the one direction it was trained in"):
        model.translate(torch.zeros(1, 1, 28, 28), torch.tensor([1]))
    with pytest.raises(GenResearchError, match="lambda_l1 and lambda_gan are both 0"):
        Pix2Pix(image_shape=(1, 28, 28), lambda_l1=0, lambda_gan=0)


def test_cyclegan_routes_each_target_to_its_generator():
    torch.manual_seed(0)
    model = CycleGAN(image_shape=(3, 28, 28), source_channels=1, ngf=2, ndf=2, n_blocks=1, n_layers_d=1, lambda_identity=0).eval()
    grey, colour = torch.rand(2, 1, 28, 28) * 2 - 1, torch.rand(2, 3, 28, 28) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model.translate(grey, torch.ones(2, dtype=torch.long)), model.generators["ab"](grey))
        assert torch.allclose(model.translate(colour, torch.zeros(2, dtype=torch.long)), model.generators["ba"](colour))
        mixed = model.translate(torch.cat([grey.expand(-1, 3, -1, -1), colour]), torch.tensor([1, 1, 0, 0]))
        assert mixed.shape == (4, 3, 28, 28)  # a mixed batch comes out in the wider domain's channels
        assert torch.allclose(mixed[:2], model.generators["ab"](grey), atol=1e-6)
    assert model.source_channels == 3 and model.domain_names == ("A", "B")
    with pytest.raises(GenResearchError, match="pass a target"):
        model.translate(grey)
    with pytest.raises(GenResearchError, match=r"ids in 0\.\.1"):
        model.translate(grey, torch.tensor([2, 1]))
    with pytest.raises(GenResearchError, match="set model.init_args.lambda_identity: 0"):
        CycleGAN(image_shape=(3, 28, 28), source_channels=1)


def test_stargan_conditions_on_one_hot_ids_or_attribute_vectors_and_checks_its_data():
    model = StarGAN(image_shape=(3, 28, 28), domains=["red", "green", "blue"], conv_dim=2, g_repeat_num=1).eval()
    assert torch.equal(model.conditioning(torch.tensor([2, 0])), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    images = torch.zeros(2, 3, 30, 22)
    with torch.no_grad():
        assert model.translate(images, torch.tensor([0, 1])).shape == (2, 3, 30, 22)
        assert not torch.equal(model.translate(images, torch.tensor([0, 0])), model.translate(images, torch.tensor([1, 1])))
    model.check_data(SimpleNamespace(domain_names=("red", "green", "blue"), multi_label=False), "digit_domains")
    with pytest.raises(GenResearchError, match=r"set model.init_args.domains: \['a', 'b', 'c'\]"):
        model.check_data(SimpleNamespace(domain_names=("a", "b", "c"), multi_label=False), "digit_domains")
    with pytest.raises(GenResearchError, match="use cyclegan for it"):
        model.check_data(SimpleNamespace(batch_fields=("source", "image", "domain"), domain_names=("A", "B")), "digits2colour")
    with pytest.raises(GenResearchError, match="set model.init_args.multi_label: true"):
        model.check_data(SimpleNamespace(domain_names=("red", "green", "blue"), multi_label=True), "celeba")
    with pytest.raises(GenResearchError, match="at least 2 distinct domain names"):
        StarGAN(image_shape=(3, 28, 28), domains=["red", "red"])
    multi = StarGAN(image_shape=(3, 28, 28), domains=["a", "b"], multi_label=True, conv_dim=2, g_repeat_num=1)
    assert torch.equal(multi.conditioning(torch.tensor([[1.0, 1.0]])), torch.tensor([[1.0, 1.0]]))
