"""DDPM (Ho et al. 2020): a diffusers UNet2DModel trained to denoise, sampled with any diffusers scheduler."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import lightning.pytorch as L
import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.common import LossSteps, check_number, check_optimizer_settings, check_widths
from gen_research.models.diffusion.pretrained import load_pipeline_weights
from gen_research.models.diffusion.sampling_contract import DiffusionSamplingContract
from gen_research.registry import MODELS
from gen_research.sampling import diffusion as diffusion_sampling
from gen_research.sampling.guidance import classifier_guidance
from gen_research.training.optimizers import AdamWImplementation

BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2", "scaled_linear": "scaled_linear"}


def min_snr_weights(snr: torch.Tensor, prediction_type: str, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for a loss on the given prediction target."""
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped  # "sample": x0-MSE already carries weight 1 = snr * (eps-MSE weight 1/snr)


def unet_block_types(num_levels: int, attention_levels: list[int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(down_block_types, up_block_types); level i (0 = full resolution) has attention if i in attention_levels."""
    down = tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(num_levels))
    up = tuple("AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(num_levels)))
    return down, up


@MODELS.register("ddpm", "denoising diffusion (diffusers UNet; eps/x0/v targets, min-SNR, CFG; ddim/dpm-solver++/euler/... samplers)")
class DDPM(DiffusionSamplingContract, LossSteps, L.LightningModule):
    """Denoising diffusion probabilistic model on a diffusers UNet2DModel.

    Contract (gen_research/models/contract.py): Generates (class-conditional when trained so), ExportsDiffusers;
    its sampling options, samplers and their rules are in sampling_contract.py."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        block_out_channels: list[int] = (32, 64, 64),
        layers_per_block: int = 1,
        attention_levels: list[int] = (),
        dropout: float = 0.0,
        num_train_timesteps: int = 1000,
        noise_schedule: Literal["linear", "cosine", "scaled_linear"] = "linear",
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        loss_weighting: Literal["mse", "min_snr"] = "mse",
        snr_gamma: float = 5.0,
        class_conditional: bool = False,
        p_uncond: float = 0.1,
        sampler: str = "ddim",
        sampling_steps: int = 50,
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        init_from: str | None = None,
        clip_sample: bool = True,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        noise_offset: float = 0.0,
    ) -> None:
        """``optimizer_implementation``: AdamW kernel: auto (fused where the device supports it), fused, foreach or
        for_loop; the same update up to rounding, see docs/results.md (Speed)."""
        super().__init__()
        check_optimizer_settings("ddpm", lr, weight_decay, warmup_steps, optimizer_implementation)
        check_widths("ddpm", "block_out_channels", block_out_channels)
        check_widths("ddpm", "layers_per_block", layers_per_block)
        check_number("ddpm", "dropout", dropout, low=0.0, high=1.0, high_inclusive=False, hint="a fraction in [0, 1)")
        check_widths("ddpm", "num_train_timesteps", num_train_timesteps)
        check_number("ddpm", "snr_gamma", snr_gamma, low=0.0, low_inclusive=False, hint="e.g. 5.0 (Hang et al. 2023)")
        check_number("ddpm", "sampling_steps", sampling_steps, low=1, high=num_train_timesteps, hint=f"1..num_train_timesteps={num_train_timesteps}")
        check_number("ddpm", "eta", eta, low=0.0, hint="0 (deterministic DDIM) to 1 (DDPM-like)")
        check_number("ddpm", "guidance_scale", guidance_scale, low=0.0, hint="1 (no guidance) or more")
        check_number("ddpm", "beta_start", beta_start, low=0.0, low_inclusive=False, high=beta_end, high_inclusive=False, hint="e.g. 1e-4 (Ho et al.), 0.00085 (Stable Diffusion)")
        check_number("ddpm", "noise_offset", noise_offset, low=0.0, hint="0 (off) or e.g. 0.05-0.1 (Lin et al. 2023 / diffusers' --noise_offset)")
        check_number("ddpm", "beta_end", beta_end, low=beta_start, low_inclusive=False, high=1.0, high_inclusive=False, hint="e.g. 0.02 (Ho et al.), 0.012 (Stable Diffusion)")
        self.save_hyperparameters()
        self.hparams.block_out_channels = list(block_out_channels)
        self.hparams.attention_levels = list(attention_levels)
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        self.sample_shape = (c, h, w)  # what the UNet denoises (a latent model: the latent shape; see models/ldm)
        levels = len(block_out_channels)
        factor = 2 ** (levels - 1)
        if h % factor or w % factor:
            raise GenResearchError(
                f"ddpm: image side {h}x{w} is not divisible by 2**(len(block_out_channels)-1) = {factor}; "
                "set data resize/center_crop to a multiple of it or use fewer block_out_channels"
            )
        if bad := [i for i in attention_levels if not 0 <= i < levels]:
            raise GenResearchError(f"ddpm: attention_levels {bad} out of range; use indices 0..{levels - 1}")
        if class_conditional and not num_classes:
            raise GenResearchError("ddpm: class_conditional needs num_classes (a labelled data module) or set class_conditional: false")
        if not 0.0 <= p_uncond <= 1.0:
            raise GenResearchError(f"ddpm: p_uncond must be in [0, 1], got {p_uncond}")
        diffusion_sampling.check_scheduler_name(sampler)
        down, up = unet_block_types(levels, list(attention_levels))
        self.null_label = num_classes if class_conditional else None  # last embedding row = "no label"
        if class_conditional:
            self.BATCH_FIELDS = ("image", "label")  # the contract: this model trains on labels too
        self.unet = self.build_unet((c, h, w), down, up)
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=BETA_SCHEDULES[noise_schedule],
            beta_start=beta_start,  # linear and scaled_linear only (cosine is defined by alpha_bar)
            beta_end=beta_end,
            prediction_type=prediction_type,
            clip_sample=clip_sample,  # x0 in [-1, 1]: images; latents are not bounded (models/ldm sets False)
            timestep_spacing="trailing",  # few-step samplers start at t = T-1 (Lin et al. 2024)
        )
        if init_from:  # fine-tune a diffusers pipeline folder (e.g. from `export`); checkpoints restore over it
            load_pipeline_weights(self.unet, self.noise_scheduler.config, init_from)

    def build_unet(self, shape: tuple[int, int, int], down: tuple[str, ...], up: tuple[str, ...]) -> nn.Module:
        """The denoising network for samples of ``shape`` (a subclass with another UNet overrides this)."""
        hp = self.hparams
        c, h, w = shape
        return UNet2DModel(
            sample_size=(h, w),
            in_channels=c,
            out_channels=c,
            block_out_channels=tuple(hp.block_out_channels),
            layers_per_block=hp.layers_per_block,
            down_block_types=down,
            up_block_types=up,
            dropout=hp.dropout,
            norm_num_groups=min(32, math.gcd(*hp.block_out_channels)),
            attention_head_dim=min(8, min(hp.block_out_channels)),
            num_class_embeds=hp.num_classes + 1 if self.null_label is not None else None,
        )

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> "DDPM":  # type: ignore[override]
        """Lightning's loader, minus ``init_from``: the checkpoint holds the weights, the pipeline folder may be gone."""
        kwargs.setdefault("init_from", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # ---- model ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's prediction (epsilon, x0 or v per ``prediction_type``) for noisy images at timesteps t."""
        return self.unet(x, t, class_labels=labels if self.null_label is not None else None).sample

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) at integer timesteps t."""
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(t.device)[t].float()
        return alpha_bar / (1 - alpha_bar)

    def compute_losses(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Denoising loss on a batch; randomness (t, noise, label dropout) drawn from ``generator``."""
        hp = self.hparams
        b = len(x)
        gen = {"generator": generator} if generator is not None else {}
        t = self.draw_timesteps(b, x.device, generator)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, **gen)
        if hp.get("noise_offset"):  # Lin et al. 2023's offset noise (diffusers' --noise_offset): a per-channel constant
            noise = noise + hp.noise_offset * torch.randn((b, x.shape[1], 1, 1), device=x.device, dtype=x.dtype, **gen)
        x_t = self.noise_scheduler.add_noise(x, noise, t)
        if hp.prediction_type == "epsilon":
            target = noise
        elif hp.prediction_type == "sample":
            target = x
        else:
            target = self.noise_scheduler.get_velocity(x, noise, t)
        cond = self.training_condition(labels, b, x.device, generator)
        per_image = (self(x_t, t, cond).float() - target.float()).pow(2).flatten(1).mean(1)
        mse = per_image.mean()
        if hp.loss_weighting == "min_snr":
            loss = (min_snr_weights(self.snr(t), hp.prediction_type, hp.snr_gamma) * per_image).mean()
        else:
            loss = mse
        return {"loss": loss, "mse": mse}

    def draw_timesteps(self, batch_size: int, device: torch.device, generator: torch.Generator | None,
                       high: int | None = None) -> torch.Tensor:
        """Training timesteps, uniform over the noise levels below ``high`` (default all; an SDXL-style refiner: 200)."""
        gen = {"generator": generator} if generator is not None else {}
        return torch.randint(0, high or self.hparams.num_train_timesteps, (batch_size,), device=device, **gen)

    def training_condition(self, labels: torch.Tensor | None, batch_size: int, device: torch.device,
                           generator: torch.Generator | None) -> Any:
        """What ``forward`` is conditioned on in a loss: the labels, dropped to the null label with p_uncond in training
        (a subclass with other conditioning overrides this)."""
        if self.null_label is None:
            return None
        if labels is None:
            raise GenResearchError("ddpm: class_conditional needs labels in every batch")
        cond = labels.to(device)
        if generator is None and self.hparams.p_uncond > 0:  # label dropout in training only
            drop = torch.rand(batch_size, device=device) < self.hparams.p_uncond
            cond = torch.where(drop, torch.full_like(cond, self.null_label), cond)
        return cond

    # ---- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        classifier: Any | None = None,
        classifier_scale: float = 1.0,
        init_images: torch.Tensor | None = None,
        strength: float = 1.0,
        known_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``num_samples`` images in [-1, 1]; None arguments take the model's hparams (sampler, sampling_steps, ...).

        - A class-conditional model draws ``labels`` (cycling 0..C-1 when None); ``guidance_scale`` != 1
          uses classifier-free guidance (0 = unconditional).
        - ``classifier`` (a :class:`~gen_research.models.diffusion.NoisyClassifier` trained on this model's
          noise schedule) adds classifier guidance of strength ``classifier_scale`` towards ``labels``; it
          works for unconditional models too (then labels cycle over the classifier's classes).
        - ``init_images`` (in [-1, 1], [N or 1, C, H, W]) with ``strength`` < 1 is img2img / SDEdit, with
          ``known_mask`` (1 = keep that pixel) inpainting; both may be combined.
        """
        hp = self.hparams
        sampler = hp.sampler if sampler is None else sampler
        steps = hp.sampling_steps if steps is None else steps
        scale = hp.guidance_scale if guidance_scale is None else guidance_scale
        eta = hp.eta if eta is None else eta
        if steps < 1:
            raise GenResearchError(f"ddpm: sampling steps must be at least 1, got {steps}")
        scheduler = diffusion_sampling.make_scheduler(sampler, self.noise_scheduler.config)
        num_classes = hp.num_classes if self.null_label is not None else getattr(getattr(classifier, "hparams", None), "num_classes", None)
        if labels is not None and num_classes is None:
            raise GenResearchError("ddpm: labels given to an unconditional model without a classifier; train with class_conditional: true or pass a noisy classifier")
        if num_classes is not None:
            if labels is None:
                labels = torch.arange(num_samples) % num_classes
            labels = torch.as_tensor(labels, dtype=torch.long, device=self.device)
            if len(labels) != num_samples:
                raise GenResearchError(f"ddpm: got {len(labels)} labels for {num_samples} samples")
            if bool((labels < 0).any() or (labels >= num_classes).any()):
                raise GenResearchError(f"ddpm: labels must be classes 0..{num_classes - 1}")
        if self.null_label is None:
            if scale != 1.0 and guidance_scale is not None:
                raise GenResearchError("ddpm: guidance_scale (classifier-free guidance) needs a class-conditional model; use a noisy classifier for an unconditional one")
            denoise = lambda x, t: self(x, t)  # noqa: E731
        else:
            denoise = partial(
                diffusion_sampling.classifier_free_guidance, self, labels=labels, null_label=self.null_label, scale=scale
            )
        if classifier is not None:
            denoise = self._classifier_guided(denoise, classifier, labels, classifier_scale)
        shape = (num_samples, *self.sample_shape)
        dtype = next(self.unet.parameters()).dtype
        return diffusion_sampling.sample(
            lambda x, t: denoise(x.to(dtype), t), scheduler, shape, steps, generator, self.device, eta=eta,
            init_images=init_images, strength=strength, known_mask=known_mask, clip=bool(hp.get("clip_sample", True)),
        )

    def _classifier_guided(self, denoise: Any, classifier: Any, labels: torch.Tensor, scale: float) -> Any:
        """``denoise`` steered by a noisy classifier trained on this model's noise schedule (checked)."""
        theirs = getattr(classifier, "alphas_cumprod", None)
        ours = self.noise_scheduler.alphas_cumprod
        if theirs is None or theirs.shape != ours.shape or not torch.allclose(theirs.float().cpu(), ours.float().cpu(), atol=1e-6):
            raise GenResearchError(
                "classifier guidance: the classifier was trained on another noise schedule; train it with this "
                f"model's num_train_timesteps ({self.hparams.num_train_timesteps}) and noise_schedule ({self.hparams.noise_schedule!r})"
            )
        classifier = classifier.to(self.device).eval()
        return classifier_guidance(denoise, classifier, labels, scale, ours, self.hparams.prediction_type)


__all__ = ["DDPM", "min_snr_weights", "unet_block_types"]
