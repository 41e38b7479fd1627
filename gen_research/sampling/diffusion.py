"""Diffusion sampling: diffusers schedulers, a generic sampling loop and classifier-free guidance.

Small pure functions in the style of k-diffusion: the model is reduced to ``denoise(x, t) -> output``
(epsilon, x0 or v, whatever the scheduler's ``prediction_type`` says) and every scheduler is a diffusers
one, rebuilt ``from_config`` of the training DDPMScheduler so that its beta schedule and prediction type
carry over. All randomness comes from the caller's ``torch.Generator``; the global RNG is never touched.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from gen_research.errors import GenResearchError

SCHEDULERS: dict[str, type] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm-solver++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
    "pndm": PNDMScheduler,
}
# The one table of diffusion samplers: what ddpm's --sampler accepts (python -m gen_research list samplers).
SCHEDULER_DESCRIPTIONS: dict[str, str] = {
    "ddpm": "ancestral DDPM steps (Ho et al. 2020); stochastic, needs many steps",
    "ddim": "DDIM (Song et al. 2021); eta 0 deterministic, eta 1 ~ DDPM",
    "dpm-solver++": "DPM-Solver++ multistep (Lu et al. 2022); good in 10-25 steps",
    "euler": "Euler ODE steps in sigma space (Karras et al. 2022)",
    "euler-ancestral": "Euler ancestral (stochastic) steps in sigma space",
    "heun": "Heun 2nd-order ODE steps (Karras et al. 2022); 2 model calls a step",
    "pndm": "PLMS / PNDM linear multistep (Liu et al. 2022); epsilon or v models",
}
# config set on top of the training config for some schedulers
# dpm-solver++: x0 predictions clipped to [-1, 1] (dynamic thresholding with max 1), as clip_sample does for ddpm/ddim;
# without it, the first steps' x0 = (x - sigma eps) / alpha at alpha_bar ~ 0 (cosine schedule, t = T-1) blows up.
_OVERRIDES: dict[str, dict[str, Any]] = {
    "dpm-solver++": {"algorithm_type": "dpmsolver++", "thresholding": True, "sample_max_value": 1.0},
    "pndm": {"skip_prk_steps": True},
}
# prediction types a scheduler cannot turn into a step (diffusers would raise mid-sampling)
_UNSUPPORTED_PREDICTIONS = {"pndm": {"sample"}, "euler-ancestral": {"sample"}}

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_scheduler_name(name: str) -> None:
    """Raise a one-line GenResearchError for an unknown sampler name, listing close matches."""
    if name not in SCHEDULERS:
        close = difflib.get_close_matches(name, list(SCHEDULERS), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(SCHEDULERS)}"
        raise GenResearchError(f"unknown diffusion sampler {name!r}; {hint}")


def make_scheduler(name: str, train_config: dict[str, Any]) -> Any:
    """A fresh inference scheduler ``name`` built from the training DDPMScheduler's config."""
    check_scheduler_name(name)
    prediction = train_config.get("prediction_type", "epsilon")
    if prediction in _UNSUPPORTED_PREDICTIONS.get(name, ()):
        raise GenResearchError(
            f"sampler {name!r} does not support prediction_type {prediction!r}; pick another sampler (e.g. ddim)"
        )
    config = {k: v for k, v in dict(train_config).items() if not k.startswith("_")}
    overrides = dict(_OVERRIDES.get(name, {}))
    if not config.get("clip_sample", True):  # unbounded data (latents): no x0 clipping or thresholding either
        overrides.pop("thresholding", None)
        overrides.pop("sample_max_value", None)
    return SCHEDULERS[name].from_config({**config, **overrides})


def classifier_free_guidance(
    model_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor,
    null_label: int,
    scale: float,
) -> torch.Tensor:
    """Class-conditional classifier-free guidance (Ho & Salimans 2022): :func:`guided` with the null label as the
    unconditional input."""
    return guided(model_fn, x, t, labels, torch.full_like(labels, null_label), scale)


def guided(model_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor], x: torch.Tensor, t: torch.Tensor,
           cond: Any, uncond: Any, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond), with both predictions in one batched call.

    ``cond`` / ``uncond`` are what ``model_fn`` is conditioned on: label tensors, prompt embeddings, or dicts of such
    tensors (concatenated key by key). For text, ``uncond`` is the negative prompt's (the empty prompt's by default),
    as Stable Diffusion's pipelines compute it. scale 0 gives the unconditional output, 1 the conditional one, > 1
    extrapolates past it; scales 0 and 1 need one of the two predictions only, so they cost a single un-doubled call.
    """
    if scale == 1.0:
        return model_fn(x, t, cond)
    if scale == 0.0:
        return model_fn(x, t, uncond)
    t = torch.as_tensor(t, device=x.device)
    t2 = t if t.ndim == 0 else torch.cat([t, t])  # a scalar timestep broadcasts over the doubled batch
    out = model_fn(torch.cat([x, x]), t2, _cat_conditions(cond, uncond))
    cond_out, uncond_out = out.chunk(2)
    return uncond_out + scale * (cond_out - uncond_out)


def _cat_conditions(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {key: _cat_conditions(a[key], b[key]) for key in a}
    return None if a is None else torch.cat([a, b])


def start_index(num_steps: int, strength: float, order: int = 1) -> int:
    """Index into ``scheduler.timesteps`` where img2img / SDEdit starts (Meng et al. 2022), as diffusers does.

    strength 1 starts from pure noise (index 0); strength s runs the last ``round-down(s * num_steps)``
    steps, so smaller strengths stay closer to the input image.
    """
    if not 0.0 < strength <= 1.0:
        raise GenResearchError(f"strength must be in (0, 1], got {strength}; 1 ignores the input image, small values keep it")
    kept = min(int(num_steps * strength), num_steps)
    if kept < 1:
        raise GenResearchError(f"strength {strength} x {num_steps} steps leaves no step to run; raise --strength or --steps")
    return (num_steps - kept) * order


def sample(
    denoise: Denoiser,
    scheduler: Any,
    shape: tuple[int, ...],
    num_steps: int,
    generator: torch.Generator | None,
    device: torch.device | str,
    eta: float = 0.0,
    init_images: torch.Tensor | None = None,
    strength: float = 1.0,
    known_mask: torch.Tensor | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """Run ``scheduler`` from x_T down to x_0; images clamped to [-1, 1] (``clip``; latents are left unbounded).

    Plain sampling starts from x_T ~ N(0, init_noise_sigma^2). With ``init_images`` (in [-1, 1]):

    - img2img / SDEdit (``strength`` < 1): start from the input images noised to the timestep where the
      last ``strength`` fraction of the steps begins (:func:`start_index`);
    - inpainting (``known_mask``, 1 = known pixel, broadcastable to ``shape``): the known pixels (mask > 0.5 is
      treated as known: binary masks) start as the input noised to the first step's level and, after every step,
      are replaced by the input noised afresh to the next step's level, q(x_t | x_0) (RePaint's replacement,
      Lugmayr et al. 2022, without resampling); after the last step they are the input exactly.
    """
    if generator is None:  # fresh entropy without a draw from the global RNG
        generator = torch.Generator(device="cpu")
        generator.seed()
    device = torch.device(device)
    if (strength < 1.0 or known_mask is not None) and init_images is None:
        raise GenResearchError("img2img (strength < 1) and inpainting (a mask) need input images")
    scheduler.set_timesteps(num_steps, device=device)
    timesteps = scheduler.timesteps
    noise = randn_tensor(shape, generator=generator, device=device)
    if init_images is not None:
        init_images = init_images.to(device=device, dtype=noise.dtype).expand(shape)
    if strength < 1.0:
        begin = start_index(num_steps, strength, scheduler.order)
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):  # sigma-space schedulers index their sigmas from here
            scheduler.set_begin_index(begin)
        x = scheduler.add_noise(init_images, noise, timesteps[:1].repeat(shape[0]))
    else:
        x = noise * scheduler.init_noise_sigma
    if known_mask is not None:  # the known pixels start on q(x_t | x_0) too, not as pure noise (abar_T > 0)
        x = torch.where(known_mask.to(device) > 0.5, scheduler.add_noise(init_images, noise, timesteps[:1].repeat(shape[0])).to(x.dtype), x)
    accepts = inspect.signature(scheduler.step).parameters  # deterministic ones (heun, pndm) take no generator
    extra = {"generator": generator} if "generator" in accepts else {}
    if isinstance(scheduler, DDIMScheduler):
        extra["eta"] = eta
        # With clip_sample, step from the clipped x0 AND the epsilon consistent with it; mixing the clipped x0 with the
        # model's unclipped epsilon leaves x_t off the trajectory at every clipped step, so more steps drifted further
        # (cfg_mnist5k: FID 28.8 at 10 DDIM steps, 81.8 at 100). diffusers' DDIMPipeline takes the same flag.
        extra["use_clipped_model_output"] = True
    for i, t in enumerate(timesteps):
        x_in = scheduler.scale_model_input(x, t)
        out = denoise(x_in, t)
        x = scheduler.step(out, t, x, **extra).prev_sample
        if known_mask is not None:
            if i + 1 < len(timesteps):
                fresh = randn_tensor(shape, generator=generator, device=device)
                known = scheduler.add_noise(init_images, fresh, timesteps[i + 1 : i + 2].repeat(shape[0]))
            else:
                known = init_images
            x = torch.where(known_mask.to(device) > 0.5, known.to(x.dtype), x)
    return x.clamp(-1.0, 1.0) if clip else x


__all__ = [
    "SCHEDULERS",
    "SCHEDULER_DESCRIPTIONS",
    "check_scheduler_name",
    "classifier_free_guidance",
    "guided",
    "make_scheduler",
    "sample",
    "start_index",
]
