"""Latent diffusion (Rombach et al. 2022, CompVis/latent-diffusion): the DDPM family's UNet, losses, samplers and
guidance in the latent space of a frozen first-stage autoencoder (``autoencoder_kl``, ``autoencoder_vq``).

- Latents are ``z = latent_scale * (mean + std * noise)`` from the first stage's posterior. ``latent_scale`` is
  CompVis' ``scale_by_std``: 1 / std(z) of the first training batch (averaged over DDP ranks), computed once and
  stored in the checkpoint (a resumed run reuses it, never recomputes it on another batch), or set in the YAML.
- The UNet needs sides divisible by 2**(levels - 1): a latent of another size (7x7 from 28x28 at factor 4) is
  reflect-padded to the next multiple and cropped back; the padded border is denoised like the rest and dropped.
- Sampling draws latents with any diffusion sampler and classifier-free guidance, then decodes them. img2img
  encodes the input images (posterior mean) and noises them in latent space; inpainting keeps the latents whose
  whole pixel patch is known (the pixel mask max-pooled to the latent grid) and, after decoding, pastes the known
  pixels back exactly, as pixel-space inpainting ends with them (the decoder alone would only approximate them).
- ``cache_latents`` encodes the training images once (gen_research/models/ldm/latent_cache.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from gen_research.errors import GenResearchError
from gen_research.models.contract import FirstStage, SamplingContext
from gen_research.models.diffusion.ddpm import DDPM
from gen_research.models.first_stage import FrozenFirstStage, build_first_stage
from gen_research.models.ldm import latent_cache
from gen_research.registry import MODELS


def padded_shape(shape: tuple[int, int, int], factor: int) -> tuple[int, int, int]:
    c, h, w = shape
    return c, math.ceil(h / factor) * factor, math.ceil(w / factor) * factor


@MODELS.register("ldm", "latent diffusion: ddpm's UNet, samplers and guidance in a frozen first stage's latent space")
class LatentDiffusion(FrozenFirstStage, DDPM):
    """DDPM on the latents of ``first_stage_ckpt`` (every DDPM option applies; see gen_research/models/diffusion/ddpm.py).

    Contract: Generates (class-conditional with CFG when trained so), ExportsDiffusers (a latent-diffusion pipeline
    folder with the VAE: gen_research/models/ldm/pipeline_gen_research_ldm.py); the sampling options are the
    diffusion family's (img2img and inpainting included)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        first_stage_ckpt: str | None = None,
        first_stage: dict[str, Any] | None = None,
        latent_scale: float | None = None,
        cache_latents: bool = False,
        latent_cache_dir: str | None = None,
        block_out_channels: list[int] = (64, 128),
        clip_sample: bool = False,
        **ddpm_options: Any,
    ) -> None:
        """``first_stage_ckpt``: the first stage's checkpoint (a two-stage experiment sets it); ``first_stage`` is
        filled in from it and stored, so this model's checkpoints rebuild the first stage without that file.
        ``latent_scale``: None computes 1/std(z) on the first batch. ``clip_sample``: latents are unbounded, so x0
        predictions are not clipped to [-1, 1] (CompVis' LDMs sample with clip_denoised=False). The rest: ddpm's."""
        if ddpm_options.get("init_from"):
            raise GenResearchError("ldm: init_from (a pixel-space diffusers pipeline) does not apply; start from first_stage_ckpt")
        stage, spec = self.load_first_stage(first_stage_ckpt, first_stage)
        stage_images = tuple(int(v) for v in stage.image_shape)
        if stage_images != tuple(image_shape):
            raise GenResearchError(f"ldm: the first stage was trained on {tuple(stage_images)} images, the data gives {tuple(image_shape)}; "
                                   "use the first stage's data settings (data.init_args resize/center_crop)")
        if latent_scale is not None and not (math.isfinite(latent_scale) and latent_scale > 0):
            raise GenResearchError(f"ldm: model.init_args.latent_scale={latent_scale!r} must be a positive number, or null to compute 1/std(z)")
        latent_shape = tuple(int(v) for v in stage.latent_shape)
        factor = 2 ** (len(list(block_out_channels)) - 1)
        super().__init__(image_shape=padded_shape(latent_shape, factor), num_classes=num_classes,
                         block_out_channels=block_out_channels, clip_sample=clip_sample, **ddpm_options)
        self.hparams.first_stage = spec
        self.hparams.image_shape = tuple(image_shape)
        self.first_stage = stage
        self.image_shape = tuple(int(v) for v in image_shape)  # what sample returns and --input/--mask describe
        self.latent_shape = latent_shape
        # A plain number saved in the checkpoint by on_save_checkpoint, not a buffer: an EMA of the whole model
        # (ema without target) averages buffers too and would blend the unset NaN into it.
        self.latent_scale = float(latent_scale) if latent_scale else float("nan")

    def load_first_stage(self, first_stage_ckpt: str | None, first_stage: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        """(frozen first stage, its spec to store): from a checkpoint, or rebuilt from a stored spec (models/first_stage.py)."""
        return build_first_stage(self.owner, first_stage_ckpt, first_stage, FirstStage)

    owner = "ldm"  # the name in error messages

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> "LatentDiffusion":  # type: ignore[override]
        """The checkpoint holds the first stage (architecture in ``first_stage``, weights in its state_dict)."""
        kwargs.setdefault("first_stage_ckpt", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ldm_latent_scale"] = self.latent_scale

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "ldm_latent_scale" in checkpoint:  # the factor the run measured (or was given) first: never re-measured
            self.latent_scale = float(checkpoint["ldm_latent_scale"])

    # ---- latents ----------------------------------------------------------------------------------
    def _pad(self, z: torch.Tensor) -> torch.Tensor:
        _, h, w = self.latent_shape
        _, ph, pw = self.sample_shape
        return F.pad(z, (0, pw - w, 0, ph - h), mode="reflect") if (ph, pw) != (h, w) else z

    def _crop(self, z: torch.Tensor) -> torch.Tensor:
        _, h, w = self.latent_shape
        return z[..., :h, :w]

    def _scaled(self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        gen = {"generator": generator} if generator is not None else {}
        z = mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, **gen)
        if math.isnan(self.latent_scale):
            if not self.training:  # validation before any training step (Lightning's sanity check): measure, keep nothing
                return self._pad(z / z.float().std().clamp_min(1e-8))
            self._set_latent_scale(z)
        return self._pad(z * self.latent_scale)

    @torch.no_grad()
    def _set_latent_scale(self, z: torch.Tensor) -> None:
        std = z.detach().float().std()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            std = self.all_gather(std).float().mean()
        self.latent_scale = 1.0 / float(std.clamp_min(1e-8))
        rank_zero_info(f"ldm: latent scale factor 1/std(z) = {self.latent_scale:.5f} (first training batch); stored in the checkpoint")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled, padded latents of images (posterior means): what img2img starts from."""
        mean, _ = self.first_stage.encode_moments(images)
        if math.isnan(self.latent_scale):
            raise GenResearchError("ldm: the latent scale factor was never set (the model has not trained); fit it first or set model.init_args.latent_scale")
        return self._pad(mean * self.latent_scale)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of padded, scaled latents."""
        return self.first_stage.decode_latents(self._crop(z) / self.latent_scale).clamp(-1.0, 1.0)

    # ---- training ---------------------------------------------------------------------------------
    def compute_losses(self, x: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       ) -> dict[str, torch.Tensor]:
        """DDPM's loss on the latents of images ``x``."""
        with torch.no_grad():
            mean, std = self.first_stage.encode_moments(x)
        return DDPM.compute_losses(self, self._scaled(mean, std, generator), labels, generator)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch.get("label")
        if "latent_mean" in batch:  # cached posteriors: a fresh sample every epoch, as an uncached run draws
            z = self._scaled(batch["latent_mean"], batch["latent_std"], None)
            losses = DDPM.compute_losses(self, z, labels)
        else:
            losses = self.compute_losses(batch["image"], labels)
        size = len(labels) if labels is not None else len(next(iter(batch.values())))
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=size)
        return losses["loss"]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit" or not self.hparams.cache_latents:
            return
        trainer = self.trainer
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            raise GenResearchError("ldm: cache_latents needs a data module with a training split (train_set)")
        latent_cache.check_cacheable(datamodule)
        folder = latent_cache.default_cache_dir() if not self.hparams.latent_cache_dir else Path(self.hparams.latent_cache_dir).expanduser()
        device = trainer.strategy.root_device  # setup runs before the strategy moves the model: encode on the accelerator
        self.first_stage.to(device)
        datamodule.train_set = latent_cache.cached_latents(
            self.first_stage, datamodule.train_set, device, folder, trainer.is_global_zero, trainer.strategy.barrier, rank_zero_info)

    # ---- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               init_images: torch.Tensor | None = None, known_mask: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        """Images in [-1, 1]: DDPM's sampling in latent space (same options), then the first stage's decoder."""
        if math.isnan(self.latent_scale):
            raise GenResearchError("ldm: this model has not trained (its latent scale factor is unset); fit it first")
        latent_init, latent_mask = self.latent_inputs(init_images, known_mask)
        z = DDPM.sample(self, num_samples, labels=labels, generator=generator, init_images=latent_init, known_mask=latent_mask, **options)
        return self.paste_known(self.decode(z), init_images, known_mask)

    def latent_inputs(self, init_images: torch.Tensor | None, known_mask: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """img2img / inpainting inputs in latent space: the input images' latents, and the mask of latents whose whole
        pixel patch is known (the pixel mask of generated pixels max-pooled to the latent grid)."""
        latent_init = self.encode(init_images.to(self.device)) if init_images is not None else None
        latent_mask = None
        if known_mask is not None:
            if init_images is None:
                raise GenResearchError(f"{self.owner}: inpainting (a mask) needs input images")
            _, h, w = self.latent_shape
            generate = 1.0 - known_mask.float().to(self.device)
            latent_mask = self._pad(1.0 - F.adaptive_max_pool2d(generate, (h, w)))  # known only where the whole patch is
        return latent_init, latent_mask

    @staticmethod
    def paste_known(images: torch.Tensor, init_images: torch.Tensor | None, known_mask: torch.Tensor | None) -> torch.Tensor:
        """Inpainting ends with the known pixels exactly (the decoder alone would only approximate them)."""
        if known_mask is None or init_images is None:
            return images
        keep = known_mask.to(images.device) > 0.5
        return torch.where(keep, init_images.to(images.device, images.dtype).expand_as(images), images)

    def check_sampling_options(self, options: dict[str, Any], context: SamplingContext | None = None) -> None:
        if options.get("classifier_ckpt"):
            raise GenResearchError("--classifier-ckpt: classifier guidance needs a noisy classifier of latents, which gen_research does not train; "
                                   "use classifier-free guidance (--guidance-scale) of a class-conditional ldm")
        super().check_sampling_options(options, context)

    # ---- export -----------------------------------------------------------------------------------
    def diffusers_pipeline(self, sampler: str) -> Any:
        """gen_research/models/ldm/pipeline_gen_research_ldm.py's pipeline: the first stage's diffusers autoencoder, the
        UNet (EMA weights when they were loaded) and the scheduler; class-conditional with CFG when trained so."""
        from gen_research.models.diffusion.sampling_contract import PIPELINES
        from gen_research.models.ldm.pipeline_gen_research_ldm import LatentDiffusionPipeline
        from gen_research.sampling import diffusion as diffusion_sampling

        if sampler not in PIPELINES:
            raise GenResearchError(f"export --sampler {sampler!r}: a latent diffusion pipeline is written with one of {', '.join(PIPELINES)}")
        if math.isnan(self.latent_scale):
            raise GenResearchError("export: this ldm has not trained (its latent scale factor is unset)")
        scheduler = diffusion_sampling.make_scheduler(sampler, self.noise_scheduler.config)
        _, h, w = self.latent_shape
        return LatentDiffusionPipeline(vae=self.first_stage.diffusers_autoencoder().eval(), unet=self.unet.eval(), scheduler=scheduler,
                                       latent_scale=self.latent_scale, latent_height=h, latent_width=w, null_class=self.null_label,
                                       default_guidance_scale=float(self.hparams.guidance_scale))

    def export_note(self, sampler: str) -> str:
        labels = " and class_labels=[...] with guidance_scale" if self.null_label is not None else ""
        return f" (a gen_research latent-diffusion pipeline: call it with batch_size{labels})"


__all__ = ["LatentDiffusion", "padded_shape"]
