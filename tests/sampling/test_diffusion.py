"""Diffusion samplers: every scheduler gives finite, seed-deterministic images and lands on the data with an exact
denoiser; CFG math; name errors."""

import pytest
import torch

from diffusers import DDPMScheduler

from gen_research.errors import GenResearchError
from gen_research.models.diffusion import DDPM
from gen_research.sampling.diffusion import SCHEDULER_DESCRIPTIONS, SCHEDULERS, classifier_free_guidance, make_scheduler, sample


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DDPM(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100).eval()


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_sampler_finite_and_deterministic(name, model):
    assert name in SCHEDULER_DESCRIPTIONS and name in model.SAMPLERS  # the one table, declared by the family
    state = torch.get_rng_state()
    a = model.sample(2, generator=torch.Generator().manual_seed(5), sampler=name, steps=3)
    b = model.sample(2, generator=torch.Generator().manual_seed(5), sampler=name, steps=3)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched
    assert a.shape == (2, 1, 8, 8) and torch.isfinite(a).all()  # (within [-1, 1] by the final clamp: no check)
    assert torch.equal(a, b)


# PNDM's first steps extrapolate epsilon with a lower-order formula, exact only for an epsilon that does not change
# with x; every other scheduler steps straight to the predicted x0 at the end.
ORACLE_TOLERANCE = {"pndm": 0.1}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_sampler_lands_on_the_data_with_an_exact_denoiser(name):
    """Data = one image x*: the exact epsilon is (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t), and sampling must return
    x* (far from any clamp: x* lies in [-0.8, 0.8]). A wrong step, scaling or timestep lands elsewhere."""
    target = torch.linspace(-0.8, 0.8, 64).reshape(1, 1, 8, 8).expand(2, 1, 8, 8)
    scheduler = make_scheduler(name, DDPMScheduler(num_train_timesteps=100, beta_schedule="linear").config)
    abar = scheduler.alphas_cumprod

    def exact_epsilon(x, t):
        a = float(abar[int(round(float(t)))])
        return (x - a**0.5 * target) / (1 - a) ** 0.5

    out = sample(exact_epsilon, scheduler, (2, 1, 8, 8), 3, torch.Generator().manual_seed(5), "cpu")
    assert (out - target).abs().max() < ORACLE_TOLERANCE.get(name, 1e-4)


def test_make_scheduler_keeps_training_config(model):
    config = model.noise_scheduler.config
    for name in SCHEDULERS:
        s = make_scheduler(name, config)
        assert s.config.num_train_timesteps == 100 and s.config.prediction_type == "epsilon"
        assert s.config.beta_schedule == config.beta_schedule
    assert make_scheduler("dpm-solver++", config).config.algorithm_type == "dpmsolver++"
    assert make_scheduler("pndm", config).config.skip_prk_steps


def test_unknown_name():
    with pytest.raises(GenResearchError, match="unknown diffusion sampler 'eulr'.*euler"):
        make_scheduler("eulr", {})


def test_unsupported_prediction_type():
    with pytest.raises(GenResearchError, match="does not support prediction_type 'sample'"):
        make_scheduler("pndm", {"prediction_type": "sample"})


def test_sampler_option_is_declared_by_the_diffusion_family_only():
    from gen_research.models.autoencoder import VAE
    from gen_research.models.contract import check_sampling_options

    with pytest.raises(GenResearchError, match="--sampler does not apply to VAE"):
        check_sampling_options(VAE(image_shape=(1, 8, 8), channels=[8, 16], latent_dim=4), {"sampler": "ddim"})


def test_classifier_free_guidance_math():
    calls = []

    def model_fn(x, t, labels):  # conditional: x + label; null label 9: zeros
        calls.append(len(x))
        return torch.where((labels == 9)[:, None], torch.zeros_like(x), x + labels[:, None].float())

    x = torch.randn(3, 4)
    labels = torch.tensor([1, 2, 3])
    t = torch.tensor(5)
    cond, uncond = x + labels[:, None].float(), torch.zeros_like(x)
    torch.testing.assert_close(classifier_free_guidance(model_fn, x, t, labels, 9, 0.0), uncond)
    torch.testing.assert_close(classifier_free_guidance(model_fn, x, t, labels, 9, 1.0), cond)
    torch.testing.assert_close(classifier_free_guidance(model_fn, x, t, labels, 9, 3.0), uncond + 3 * (cond - uncond))
    assert calls == [3, 3, 6]  # scales 0 and 1 need one prediction; others cond and uncond in one batched call
    # per-sample timesteps are doubled along with the batch
    out = classifier_free_guidance(lambda x, t, y: x * t[:, None], x, torch.tensor([1.0, 2.0, 3.0]), labels, 9, 2.0)
    torch.testing.assert_close(out, x * torch.tensor([1.0, 2.0, 3.0])[:, None])
