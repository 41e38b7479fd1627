"""DDIM's ``eta`` reaches the scheduler: eta > 0 adds fresh noise at every step (Song et al. 2021, eq. 16).

eta 0 is deterministic given the starting noise; eta > 0 differs from it, by more the larger eta; different seeds
differ and the same seed repeats. Checked on the pure sampling loop and through the registered ddim sampler and
the DDPM model, so an eta dropped (or forced to 0) anywhere on the way is caught.
"""

import pytest
import torch
from diffusers import DDPMScheduler

from gen_research.models.diffusion import DDPM
from gen_research.sampling.diffusion import make_scheduler, sample

SHAPE = (8, 1, 16, 16)


def denoise(x, t):
    return 0.5 * x + 0.3 * x.mean(dim=(1, 2, 3), keepdim=True)


def ddim(eta: float, seed: int) -> torch.Tensor:
    scheduler = make_scheduler("ddim", DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").config)
    return sample(denoise, scheduler, SHAPE, 10, torch.Generator().manual_seed(seed), "cpu", eta=eta)


def test_eta_changes_the_samples_by_more_the_larger_it_is():
    plain, half, full = ddim(0.0, 3), ddim(0.5, 3), ddim(1.0, 3)
    assert torch.equal(plain, ddim(0.0, 3)) and torch.equal(full, ddim(1.0, 3))  # the same seed repeats
    gap_half, gap_full = (half - plain).abs().mean(), (full - plain).abs().mean()
    assert gap_half > 0.02 and gap_full > 1.5 * gap_half, (gap_half, gap_full)


def test_with_eta_different_seeds_differ_and_the_same_seed_repeats():
    first, again, other = ddim(1.0, 3), ddim(1.0, 3), ddim(1.0, 4)
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DDPM(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100).eval()


def test_eta_reaches_the_scheduler_through_the_sampler_and_the_model(model):
    def draw(eta, seed):
        return model.sample(4, generator=torch.Generator().manual_seed(seed), sampler="ddim", steps=5, eta=eta)

    plain, noisy = draw(0.0, 5), draw(1.0, 5)
    assert torch.equal(noisy, draw(1.0, 5))
    assert (noisy - plain).abs().mean() > 1e-3
    assert (draw(1.0, 6) - noisy).abs().mean() > 1e-3
    direct = model.sample(4, generator=torch.Generator().manual_seed(5), sampler="ddim", steps=5, eta=1.0)
    assert torch.equal(direct, noisy)
