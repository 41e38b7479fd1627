"""A diffusers pipeline for gen_research's latent diffusion models, loadable with diffusers alone.

This file imports only torch and diffusers: ``export`` copies it into the pipeline folder and names it in
model_index.json (``"_class_name": ["pipeline_gen_research_ldm", "LatentDiffusionPipeline"]``), which is how
diffusers finds a pipeline class that ships with its folder (it asks for ``trust_remote_code=True`` before running
code from a folder; the file is short, read it first):

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)   # no gen_research import
    images = pipe(batch_size=8, class_labels=[3] * 8, guidance_scale=2.0, num_inference_steps=20).images

diffusers' own LDMPipeline takes no class labels or guidance, assumes square latents the UNet's size, and divides by
the VAE's config.scaling_factor; this one follows gen_research's sampler step for step (the same noise, the same
classifier-free guidance, the same crop of the padded latent, the same decoder), so it draws the images
``python -m gen_research sample`` draws for the same seed.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

MODULE_NAME = Path(__file__).stem


class LatentDiffusionPipeline(DiffusionPipeline):
    """vae (AutoencoderKL or VQModel) + unet (UNet2DModel on scaled latents) + scheduler.

    Config: ``latent_scale`` (latents = scale * VAE latents), ``latent_height``/``latent_width`` (the VAE's latent
    size; the UNet works on a reflect-padded copy of its own ``sample_size``), ``null_class`` (the UNet's
    "no label" class of classifier-free guidance, None for unconditional models), ``default_guidance_scale``."""

    model_cpu_offload_seq = "unet->vae"

    def __init__(self, vae: Any, unet: Any, scheduler: Any, latent_scale: float = 1.0, latent_height: int | None = None,
                 latent_width: int | None = None, null_class: int | None = None, default_guidance_scale: float = 1.0) -> None:
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        self.register_to_config(latent_scale=latent_scale, latent_height=latent_height, latent_width=latent_width,
                                null_class=null_class, default_guidance_scale=default_guidance_scale)

    def _denoise(self, latents: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, scale: float) -> torch.Tensor:
        if labels is None or scale == 1.0:
            return self.unet(latents, t, class_labels=labels).sample
        null = torch.full_like(labels, int(self.config.null_class))
        if scale == 0.0:
            return self.unet(latents, t, class_labels=null).sample
        cond, uncond = self.unet(torch.cat([latents, latents]), t, class_labels=torch.cat([labels, null])).sample.chunk(2)
        return uncond + scale * (cond - uncond)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: list[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        conditional = self.config.null_class is not None
        if conditional and class_labels is None:
            class_labels = [i % int(self.config.null_class) for i in range(batch_size)]  # classes in turn, as gen_research
        if not conditional and class_labels is not None:
            raise ValueError("this model is unconditional: it takes no class_labels")
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=self.device) if conditional else None
        if labels is not None and len(labels) != batch_size:
            raise ValueError(f"{len(labels)} class_labels for batch_size {batch_size}")
        scale = float(self.config.default_guidance_scale if guidance_scale is None else guidance_scale)
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, self.unet.config.in_channels, height, width)
        latents = randn_tensor(shape, generator=generator, device=self.device) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        accepts = inspect.signature(self.scheduler.step).parameters
        extra = {key: value for key, value in (("generator", generator), ("eta", eta)) if key in accepts}
        dtype = self.unet.dtype
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(latents, t)
            out = self._denoise(model_input.to(dtype), t, labels, scale)
            latents = self.scheduler.step(out, t, latents, **extra).prev_sample
        height, width = self.config.latent_height or height, self.config.latent_width or width
        latents = latents[..., : int(height), : int(width)] / float(self.config.latent_scale)
        image = self.vae.decode(latents.to(self.vae.dtype)).sample.clamp(-1.0, 1.0)
        image = (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()
        if output_type == "pil":
            image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """diffusers' save, plus this file next to model_index.json and named in it, so the folder loads alone."""
        super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        shutil.copyfile(__file__, folder / f"{MODULE_NAME}.py")
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = [MODULE_NAME, type(self).__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


__all__ = ["LatentDiffusionPipeline"]
