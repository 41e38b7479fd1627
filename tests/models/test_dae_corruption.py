"""Denoising autoencoder corruption statistics and validation metrics."""

import pytest
import torch
from ae_helpers import SMALL

from gen_research.models.autoencoder import DenoisingAutoencoder

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")


def test_gaussian_corruption_scale():
    model = DenoisingAutoencoder(**SMALL, corruption="gaussian", noise_std=0.2)
    x = torch.zeros(64, 1, 8, 8)  # mid-grey: clamping at +-1 never bites, so the change is pure noise
    noisy = model.corrupt(x, torch.Generator().manual_seed(0))
    assert (noisy - x).std().item() == pytest.approx(0.2, rel=0.05)
    assert (noisy - x).mean().abs().item() < 0.01
    # Near the edge of the range the result stays in [-1, 1].
    edge = model.corrupt(torch.ones(8, 1, 8, 8), torch.Generator().manual_seed(0))
    assert edge.max() <= 1.0 and edge.min() >= -1.0


def test_mask_corruption_fraction():
    model = DenoisingAutoencoder(image_shape=(3, 8, 8), channels=[16, 32], corruption="mask", mask_fraction=0.3)
    x = torch.rand(128, 3, 8, 8) * 0.5 + 0.25  # strictly positive, so masked pixels are exactly the -1s
    out = model.corrupt(x, torch.Generator().manual_seed(0))
    masked = out == -1.0
    assert masked.float().mean().item() == pytest.approx(0.3, abs=0.02)
    # Per pixel: all channels of a pixel are masked together; unmasked pixels are untouched.
    assert torch.equal(masked.all(1), masked.any(1))
    assert torch.equal(out[~masked], x[~masked])


def test_corruption_uses_generator_and_training_uses_global_rng():
    model = DenoisingAutoencoder(**SMALL)
    x = torch.zeros(4, 1, 8, 8)
    a = model.corrupt(x, torch.Generator().manual_seed(5))
    b = model.corrupt(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    state = torch.get_rng_state()
    model.corrupt(x)
    assert not torch.equal(state, torch.get_rng_state())


def test_validation_metrics_on_clean_target():
    torch.manual_seed(0)
    model = DenoisingAutoencoder(**SMALL, corruption="mask").eval()
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    state = torch.get_rng_state()
    with torch.no_grad():
        model.on_validation_epoch_start()
        m1 = model.validation_step({"image": x, "label": torch.zeros(8, dtype=torch.int64)}, 0)
        model.on_validation_epoch_start()
        m2 = model.validation_step({"image": x, "label": torch.zeros(8, dtype=torch.int64)}, 0)
        clean = (model.reconstruct(x) - x).pow(2).mean()
        corrupted = model.corrupt(x, torch.Generator().manual_seed(model.eval_seed))
        denoise = (model.decoder(model.encode(corrupted)) - x).pow(2).mean()
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    torch.testing.assert_close(m1["recon_loss"], clean)
    torch.testing.assert_close(m1["loss"], denoise)
