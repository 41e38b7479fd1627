"""The VAE under the model contract: it Generates from its prior with a declared temperature option; ae and dae
cannot sample at all (no sample method), so nothing mistakes them for generators."""

import pytest
import torch
from ae_helpers import SMALL

from gen_research.errors import GenResearchError
from gen_research.models.autoencoder import VAE, Autoencoder, DenoisingAutoencoder
from gen_research.models.contract import Generates, LatentPrior, Reconstructs, can, check_sampling_options, require


def test_samples_from_vae_deterministically():
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    with torch.no_grad():
        a = model.sample(5, generator=torch.Generator().manual_seed(9))
        b = model.sample(5, generator=torch.Generator().manual_seed(9))
    assert a.shape == (5, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert a.std(0).mean() > 0  # distinct samples


def test_temperature_scales_the_prior():
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    with torch.no_grad():
        cold = model.sample(4, generator=torch.Generator().manual_seed(0), **check_sampling_options(model, {"temperature": 0.0}))
        expected = model.decode(torch.zeros(1, model.latent_dim)).expand(4, -1, -1, -1)
        half = model.sample(4, generator=torch.Generator().manual_seed(0), temperature=0.5)
        z = 0.5 * torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cold, expected)
    torch.testing.assert_close(half, model.decode(z))


def test_declared_option_is_checked():
    model = VAE(**SMALL)
    with pytest.raises(GenResearchError, match=r"--temperature -1.0: must be a finite number in \[0, inf\)"):
        check_sampling_options(model, {"temperature": -1.0})
    with pytest.raises(GenResearchError, match="--steps does not apply to VAE; it takes: --temperature"):
        check_sampling_options(model, {"steps": 4})


@pytest.mark.parametrize("cls", [Autoencoder, DenoisingAutoencoder])
def test_models_without_prior_cannot_generate(cls):
    model = cls(**SMALL)
    assert not can(model, Generates) and not can(model, LatentPrior) and can(model, Reconstructs)
    with pytest.raises(GenResearchError, match=f"sample needs a model that can generate new images \\(sample\\); {cls.__name__} cannot"):
        require(model, Generates, "sample")
    assert can(VAE(**SMALL), Generates) and can(VAE(**SMALL), LatentPrior)
