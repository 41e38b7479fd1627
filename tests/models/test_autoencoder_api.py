"""Public API shared by ae, dae and vae: shapes, ranges, reconstruct, interpolate, sample, registry."""

import pytest
import torch
from ae_helpers import SMALL

from gen_research.models.autoencoder import VAE, Autoencoder, DenoisingAutoencoder
from gen_research.registry import MODELS

FAMILY = [Autoencoder, DenoisingAutoencoder, VAE]


def test_registered_names():
    assert MODELS.get("ae") is Autoencoder
    assert MODELS.get("dae") is DenoisingAutoencoder
    assert MODELS.get("vae") is VAE


@pytest.mark.parametrize("cls", FAMILY)
@pytest.mark.filterwarnings("ignore:You are trying to")
def test_training_step_backward(cls):
    torch.manual_seed(0)
    model = cls(**SMALL)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = model.training_step({"image": x, "label": torch.zeros(4, dtype=torch.int64)}, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters()] + [p.grad for p in model.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("cls", FAMILY)
@pytest.mark.parametrize(("shape", "channels"), [((1, 28, 28), [32, 64]), ((3, 32, 32), [32, 64, 128])])
def test_shapes_and_ranges(cls, shape, channels):
    torch.manual_seed(0)
    model = cls(image_shape=shape, channels=channels, latent_dim=5).eval()
    assert model.latent_dim == 5
    x = torch.rand(2, *shape) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, 5)
        for out in (model.decode(z * 10), model.reconstruct(x), model(x)):
            assert out.shape == (2, *shape)
            assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("cls", FAMILY)
def test_interpolate_shape_and_endpoints(cls):
    torch.manual_seed(0)
    model = cls(**SMALL).eval()
    x_a, x_b = torch.rand(3, 1, 8, 8) * 2 - 1, torch.rand(3, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        path = model.interpolate(x_a, x_b, num_steps=5)
        assert path.shape == (15, 1, 8, 8)
        rows = path.view(3, 5, 1, 8, 8)
        torch.testing.assert_close(rows[:, 0], model.decode(model.encode(x_a)))
        torch.testing.assert_close(rows[:, -1], model.decode(model.encode(x_b)))
        # Midpoint decodes the latent midpoint.
        mid = model.decode((model.encode(x_a) + model.encode(x_b)) / 2)
        torch.testing.assert_close(path.view(3, 5, 1, 8, 8)[:, 2], mid)


@pytest.mark.parametrize("cls", [Autoencoder, DenoisingAutoencoder])
def test_no_prior_models_cannot_sample(cls):
    from gen_research.models.contract import Generates, can

    assert not can(cls(**SMALL), Generates) and not hasattr(cls, "sample")  # nothing to mistake for a generator


def test_vae_sample_shape_range_and_determinism():
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    with torch.no_grad():
        a = model.sample(6, generator=torch.Generator().manual_seed(123))
        b = model.sample(6, generator=torch.Generator().manual_seed(123))
        c = model.sample(6, generator=torch.Generator().manual_seed(124))
    assert a.shape == (6, 1, 8, 8)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_vae_sample_does_not_touch_global_rng_with_generator():
    model = VAE(**SMALL).eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        model.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_vae_gaussian_decode_is_clamped_mean():
    torch.manual_seed(0)
    model = VAE(**SMALL, likelihood="gaussian").eval()
    z = torch.randn(4, 8) * 5
    with torch.no_grad():
        torch.testing.assert_close(model.decode(z), model.decoder(z).clamp(-1, 1))
    model_b = VAE(**SMALL, likelihood="bernoulli").eval()
    with torch.no_grad():
        torch.testing.assert_close(model_b.decode(z), torch.sigmoid(model_b.decoder(z)) * 2 - 1)
