"""Inpainting keeps the known pixels on q(x_t | x_0) at every step, and the generated pixels depend on them.

The denoiser is hooked: at each call the known pixels it is given are regressed on the input image x_0. For
q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps the slope must be sqrt(abar_t) and the residual's
standard deviation sqrt(1 - abar_t), for the t of that very call. Pasting the known pixels only at the end gives
a slope near 0; re-noising them to the step just done (not the next one) gives the previous step's slope.
"""

import pytest
import torch
from diffusers import DDPMScheduler

from gen_research.sampling.diffusion import make_scheduler, sample
from gen_research.sampling.inputs import known_mask

SHAPE = (16, 1, 64, 64)  # 32,768 known pixels: the slope is estimated to about +-0.01
STEPS = 5  # sqrt(abar_t) at the 5 DDIM steps of a linear 1000-step schedule: 0.04, 0.16, 0.44, 0.81, 1.0
TOLERANCE = 0.05  # well under the smallest gap between two steps' sqrt(abar) (0.12), 5 standard errors


def spatially_mixing_denoiser(calls: list):
    """An epsilon 'model' whose output everywhere depends on every pixel (through the image mean)."""

    def denoise(x, t):
        calls.append((t, x.detach().clone()))
        return 0.5 * x + 0.3 * x.mean(dim=(1, 2, 3), keepdim=True)

    return denoise


def inputs():
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    mask = known_mask("right", SHAPE[1:])  # left half known, right half generated
    return x0, mask


def scheduler(name):
    return make_scheduler(name, DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").config)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "euler", "dpm-solver++"])
def test_known_region_follows_q_xt_given_x0_at_every_step(name):
    x0, mask = inputs()
    calls: list = []
    s = scheduler(name)
    out = sample(spatially_mixing_denoiser(calls), s, SHAPE, STEPS, torch.Generator().manual_seed(1), "cpu",
                 init_images=x0, known_mask=mask)
    assert len(calls) == STEPS
    known = mask.expand(SHAPE) > 0.5
    for t, model_input in calls:
        abar = float(s.alphas_cumprod[int(round(float(t)))])
        target, given = x0[known], model_input[known]  # model input: after scale_model_input (sigma schedulers)
        slope = float(((given - given.mean()) * (target - target.mean())).sum() / ((target - target.mean()) ** 2).sum())
        residual = given - abar**0.5 * target
        assert slope == pytest.approx(abar**0.5, abs=TOLERANCE), (name, int(t), slope, abar**0.5)
        assert float(residual.std()) == pytest.approx((1 - abar) ** 0.5, abs=TOLERANCE), (name, int(t))
        assert abs(float(residual.mean())) < TOLERANCE
    torch.testing.assert_close(out[known], x0[known])  # the known pixels come out exactly


def test_changing_the_known_region_changes_the_generated_region():
    x0, mask = inputs()
    other = torch.where(mask > 0.5, torch.full_like(x0, 0.8), x0)  # the same image but for the known pixels
    outs = [sample(spatially_mixing_denoiser([]), scheduler("ddim"), SHAPE, STEPS, torch.Generator().manual_seed(1), "cpu",
                   init_images=image, known_mask=mask) for image in (x0, other)]
    generated = mask.expand(SHAPE) < 0.5
    assert (outs[0][generated] - outs[1][generated]).abs().mean() > 0.01


def test_same_seed_same_inpainting_and_the_unknown_region_is_not_the_input():
    x0, mask = inputs()
    runs = [sample(spatially_mixing_denoiser([]), scheduler("ddim"), SHAPE, STEPS, torch.Generator().manual_seed(1), "cpu",
                   init_images=x0, known_mask=mask) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    generated = mask.expand(SHAPE) < 0.5
    assert (runs[0][generated] - x0[generated]).abs().mean() > 0.1  # generated, not copied from the input
