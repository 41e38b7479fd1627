"""The first-stage losses against hand computations: adaptive GAN weight, KL nll with a learned logvar, the posterior
KL, the hinge loss, the VQ quantizer's beta on the commitment term, and the LPIPS term (random stand-in backbone)."""

import math

import pytest
import torch
import torchvision

from gen_research.errors import GenResearchError
from gen_research.models.first_stage_ae import KLAutoencoder, VQAutoencoder
from gen_research.models.first_stage_ae.losses import (
    adaptive_gan_weight,
    adversarial_factor,
    hinge_d_loss,
    kl_nll,
    posterior_kl,
)
from gen_research.nets import lpips as lpips_nets

TINY = dict(image_shape=(1, 8, 8), block_out_channels=[8, 16], norm_num_groups=4, disc_layers=1, disc_channels=8)


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    # A toy decoder's last layer w: nll = sum(w^2) (grad 2w), g = sum(3 w) (grad 3); by hand ||2w|| / (||3|| + 1e-4).
    w = torch.tensor([[1.0, -2.0], [0.5, 2.0]], requires_grad=True)
    nll, g = (w**2).sum(), (3 * w).sum()
    expected = torch.linalg.vector_norm(2 * w.detach()) / (3 * 2 + 1e-4) * 0.5
    weight = adaptive_gan_weight(nll, g, w, disc_weight=0.5)
    assert weight.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not weight.requires_grad  # detached: no gradient flows through the weight
    # A g_loss with no gradient at w: the ratio is clamped at 1e4 (then times disc_weight).
    flat = adaptive_gan_weight((w**2).sum(), (w * 0).sum(), w, disc_weight=1.0)
    assert flat.item() == pytest.approx(1e4)


def test_adversarial_factor_is_zero_before_disc_start_and_on_from_it():
    assert [adversarial_factor(step, 3) for step in (0, 2, 3, 4)] == [0.0, 0.0, 1.0, 1.0]
    assert adversarial_factor(10, 3, disc_factor=0.5) == 0.5


def test_kl_nll_with_learned_logvar_matches_the_hand_value():
    rec = torch.tensor([0.1, 0.3, 0.2, 0.4]).reshape(2, 1, 1, 2)  # batch of 2
    logvar = torch.tensor(math.log(0.5))
    # sum(rec / 0.5 + log 0.5) / 2 = (2 * 1.0 + 4 * log 0.5) / 2
    assert kl_nll(rec, logvar).item() == pytest.approx((2.0 + 4 * math.log(0.5)) / 2, rel=1e-6)
    # At logvar 0 it is sum(rec) / B: CompVis' init.
    assert kl_nll(rec, torch.tensor(0.0)).item() == pytest.approx(0.5)


def test_posterior_kl_matches_the_closed_form():
    mean = torch.tensor([1.0, 0.0, -2.0, 0.5]).reshape(2, 2, 1, 1)
    logvar = torch.tensor([0.0, math.log(2.0), 0.0, 0.0]).reshape(2, 2, 1, 1)
    # 0.5 * sum(mu^2 + var - 1 - logvar): image 1: 0.5*(1) + 0.5*(2 - 1 - log 2); image 2: 0.5*4 + 0.5*0.25
    image1 = 0.5 + 0.5 * (1 - math.log(2.0))
    image2 = 2.0 + 0.125
    assert posterior_kl(mean, logvar).item() == pytest.approx((image1 + image2) / 2, rel=1e-6)


def test_hinge_d_loss_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # 0.5 * (mean(relu(1 - [2, 0.5])) + mean(relu(1 + [-3, 0]))) = 0.5 * (0.25 + 0.5)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)


def test_vq_quantizer_puts_beta_on_the_commitment_term():
    torch.manual_seed(0)
    model = VQAutoencoder(**TINY, num_vq_embeddings=2, latent_channels=1, beta=0.25, perceptual_weight=0.0)
    quantizer = model.autoencoder.quantize
    assert quantizer.legacy is False and quantizer.beta == 0.25
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[0.0], [1.0]]))
    z = torch.tensor([0.2, 0.9]).reshape(1, 1, 1, 2).requires_grad_(True)  # nearest codes 0 and 1
    quantized, loss, _ = quantizer(z)
    # Both terms are mean((z - z_q)^2) = (0.04 + 0.01) / 2 in value: (1 + beta) times that.
    assert loss.item() == pytest.approx(1.25 * 0.025, rel=1e-5)
    loss.backward()
    # d/dz of beta * mean((sg[z_q] - z)^2): beta * 2 (z - z_q) / N; the codebook gets 2 (z_q - z) / N (no beta).
    assert torch.allclose(z.grad.flatten(), 0.25 * torch.tensor([0.2, -0.1]), atol=1e-6)
    assert torch.allclose(quantizer.embedding.weight.grad.flatten(), torch.tensor([-0.2, 0.1]), atol=1e-6)


@pytest.fixture
def random_alexnet(tmp_path, monkeypatch):
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), folder / lpips_nets.BACKBONE_FILES["alex"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GEN_RESEARCH_LPIPS_BACKBONE", raising=False)
    monkeypatch.setattr(lpips_nets, "VERIFY_BACKBONE_HASH", False)


def test_missing_lpips_backbone_fails_in_one_line_naming_the_file_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GEN_RESEARCH_LPIPS_BACKBONE", raising=False)
    model = KLAutoencoder(**TINY, perceptual_weight=1.0)
    with pytest.raises(GenResearchError) as error:
        model.perceptual.load()  # what setup("fit") calls
    message = str(error.value)
    assert "\n" not in message and "alexnet-owt-7be5be79.pth" in message and "model.init_args.perceptual_weight=0" in message


def test_lpips_term_is_frozen_outside_the_checkpoint_and_gives_gradients(random_alexnet):
    torch.manual_seed(0)
    model = KLAutoencoder(**TINY, perceptual_weight=1.0)
    model.perceptual.load()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert model.perceptual(x, x).abs().max().item() < 1e-6
    recon = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    distance = model.perceptual(x, recon)
    assert distance.shape == (2, 1, 1, 1) and (distance > 0).all()
    distance.sum().backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert not any("lpips" in key or "perceptual" in key or key.startswith("net.") for key in model.state_dict())
    lpips_parameters = {id(p) for p in model.perceptual.network.parameters()}
    assert not lpips_parameters & {id(p) for p in model.parameters()}
    assert all(not p.requires_grad for p in model.perceptual.network.parameters())
