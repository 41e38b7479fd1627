"""The 'prior' sampler: draws from a VAE's prior, refuses models without one."""

import pytest
import torch
from ae_helpers import SMALL

from gen_research.errors import GenResearchError
from gen_research.models.autoencoder import VAE, Autoencoder, DenoisingAutoencoder
from gen_research.registry import SAMPLERS
from gen_research.sampling import PriorSampler


def test_registered():
    assert SAMPLERS.get("prior") is PriorSampler


def test_samples_from_vae():
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    sampler = PriorSampler()
    with torch.no_grad():
        a = sampler(model, 5, generator=torch.Generator().manual_seed(9))
        b = sampler(model, 5, generator=torch.Generator().manual_seed(9))
        direct = model.sample(5, generator=torch.Generator().manual_seed(9))
    assert a.shape == (5, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and torch.equal(a, direct)
    assert a.std(0).mean() > 0  # distinct samples


def test_temperature_scales_the_prior():
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    with torch.no_grad():
        cold = PriorSampler(temperature=0.0)(model, 4, generator=torch.Generator().manual_seed(0))
        expected = model.decode(torch.zeros(1, model.latent_dim)).expand(4, -1, -1, -1)
        half = PriorSampler(temperature=0.5)(model, 4, generator=torch.Generator().manual_seed(0))
        z = 0.5 * torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cold, expected)
    torch.testing.assert_close(half, model.decode(z))


@pytest.mark.parametrize("cls", [Autoencoder, DenoisingAutoencoder])
def test_models_without_prior_are_refused(cls):
    with pytest.raises(GenResearchError, match=f"needs a model with a prior \\(vae\\); {cls.__name__} has none"):
        PriorSampler()(cls(**SMALL), 2)
