"""VAE likelihoods, KL, warm-up, IWAE bound and deterministic validation, checked against hand computations."""

import math

import pytest
import torch
from ae_helpers import SMALL
from torch.distributions import Normal, kl_divergence

from gen_research.models.autoencoder import VAE
from gen_research.models.autoencoder.vae import gaussian_kl

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")


def test_bernoulli_recon_nll_matches_hand_bce():
    model = VAE(**SMALL, likelihood="bernoulli")
    x = torch.tensor([[-1.0, 1.0], [0.0, 0.5]]).view(1, 1, 2, 2)
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]]).view(1, 1, 2, 2)
    t = (x + 1) / 2
    p = torch.sigmoid(logits)
    hand = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).sum()
    torch.testing.assert_close(model.recon_nll(x, logits), hand.view(1))
    # Explicit value of the first pixel: target 0, logit 2 -> -log(1 - sigmoid(2)) = log(1 + e^2).
    first = model.recon_nll(x[..., :1, :1], logits[..., :1, :1])
    assert first.item() == pytest.approx(math.log(1 + math.e**2), abs=1e-6)


def test_gaussian_recon_nll_matches_normal_log_prob():
    torch.manual_seed(0)
    model = VAE(**SMALL, likelihood="gaussian")
    assert model.log_sigma.item() == pytest.approx(math.log(0.1))
    with torch.no_grad():
        model.log_sigma.fill_(-1.3)
    x, mean = torch.rand(3, 1, 8, 8) * 2 - 1, torch.randn(3, 1, 8, 8) * 0.5
    expected = -Normal(mean, math.exp(-1.3)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(model.recon_nll(x, mean), expected)
    model.recon_nll(x, mean).sum().backward()
    assert model.log_sigma.grad is not None


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_kl_warmup_schedule():
    model = VAE(**SMALL, beta=4.0, kl_warmup_steps=100)
    assert model.effective_beta(0) == 0.0
    assert model.effective_beta(50) == pytest.approx(2.0)
    assert model.effective_beta(100) == pytest.approx(4.0)
    assert model.effective_beta(1000) == pytest.approx(4.0)
    assert VAE(**SMALL, beta=0.5).effective_beta(0) == 0.5
    # At global step 0 (no trainer) the KL carries no weight in the loss.
    losses = model.compute_losses(torch.rand(4, 1, 8, 8) * 2 - 1, torch.Generator().manual_seed(0))
    assert losses["beta"].item() == 0.0
    torch.testing.assert_close(losses["loss"], losses["recon_loss"])


def test_loss_is_recon_plus_beta_kl():
    torch.manual_seed(0)
    model = VAE(**SMALL, beta=3.0).eval()
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
        recon = model.recon_nll(x, model.decoder(mu + torch.exp(0.5 * logvar) * eps))
        kl = gaussian_kl(mu, logvar)
        got = model.compute_losses(x, torch.Generator().manual_seed(7))
        metrics = model.eval_metrics(x, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got["loss"], (recon + 3.0 * kl).mean())
    torch.testing.assert_close(got["recon_loss"], recon.mean())
    torch.testing.assert_close(metrics["elbo"], -(recon + kl).mean())  # beta=1 regardless of training beta
    torch.testing.assert_close(metrics["kl"], kl.mean())


def test_iw_nll_with_one_sample_is_single_sample_neg_elbo():
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        got = model.nll_iw(x, num_samples=1, generator=torch.Generator().manual_seed(3))
        mu, logvar = model.posterior(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn((1, *mu.shape), generator=torch.Generator().manual_seed(3))[0]
        log_q = Normal(mu, std).log_prob(z).sum(-1)
        log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
        expected = model.recon_nll(x, model.decoder(z)) + log_q - log_p
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_iw_nll_chunking_does_not_change_the_estimate():
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        whole = model.nll_iw(x, 16, torch.Generator().manual_seed(1))
        model.max_decode_batch = 12  # 3 samples x 4 images per chunk -> 6 chunks (last one partial)
        chunked = model.nll_iw(x, 16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-4)


def test_iw_nll_is_tighter_than_neg_elbo(trained_vae, digits):
    x = digits[0][:64]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        nll = trained_vae.nll_iw(x, 64, gen)
        # Low-noise -ELBO: average the single-sample estimate over 32 draws.
        neg_elbo = torch.stack([sum(trained_vae._terms(x, gen)) for _ in range(32)]).mean(0)
    assert torch.isfinite(nll).all()
    assert nll.mean() <= neg_elbo.mean() + 1e-3
    assert nll.mean() > 0  # a density on 64 pixels of discrete-ish data


def test_validation_is_deterministic_and_leaves_global_rng_alone(digits):
    torch.manual_seed(0)
    model = VAE(**SMALL, iw_samples=8).eval()
    batch = {"image": digits[0][:16], "label": digits[1][:16]}
    state = torch.get_rng_state()
    with torch.no_grad():
        model.on_validation_epoch_start()
        first = model.validation_step(batch, 0)
        model.on_validation_epoch_start()
        second = model.validation_step(batch, 0)
    assert torch.equal(state, torch.get_rng_state())
    assert set(first) >= {"loss", "recon_loss", "kl", "elbo", "nll_iw"}
    for key in first:
        assert torch.equal(first[key], second[key]), key
