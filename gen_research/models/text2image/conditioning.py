"""What ``text2image``'s UNet is conditioned on, built the way Stable Diffusion's pipelines build it.

- Prompts: the text encoders' hidden states (SD 1.x: the last layer; SDXL: the penultimate layer of both encoders,
  concatenated along the feature axis) as cross-attention context, and for SDXL a pooled embedding (the second
  encoder's projected text embedding) added to the time embedding with the micro-conditioning.
- SDXL micro-conditioning (Podell et al. 2023, sec. 2.2): ``time_ids`` = (original height, original width, crop top,
  crop left, target height, target width), as diffusers' ``_get_add_time_ids``.
- SD2 depth (stable-diffusion-2-depth): a depth map resized to the latent grid (bicubic), normalised per image to
  [-1, 1], concatenated to the latents as an extra input channel.
- SD2 upscaler (stable-diffusion-x4-upscaler): the low-resolution image at the latent grid's size, noised by a
  DDPM schedule to ``noise_level`` (the UNet's class label), concatenated to the latents.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError

Condition = dict[str, Tensor]


class PromptEncoders:
    """One or two frozen text encoders (gen_research/models/clip/text_encoders.py ``TextEncoder``) as SD/SDXL use them."""

    def __init__(self, encoders: Sequence[Any], hidden_layer: int) -> None:
        self.encoders = list(encoders)
        self.hidden_layer = hidden_layer

    @property
    def hidden_size(self) -> int:
        return sum(int(e.hidden_size) for e in self.encoders)

    @property
    def pooled_size(self) -> int:
        return int(self.encoders[-1].pooled_size)  # SDXL pools with its second encoder

    @property
    def max_length(self) -> int:
        return min(int(e.max_length) for e in self.encoders)

    def check_prompts(self, prompts: Sequence[Any], where: str) -> list[str]:
        """Prompts as strings that fit the encoders, else a one-line error (truncation would silently drop words)."""
        checked = []
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise GenResearchError(f"{where}: a prompt must be text, got {type(prompt).__name__} {prompt!r}")
            for encoder in self.encoders:
                count = len(encoder.tokenizer(prompt, truncation=False)["input_ids"])
                if count > encoder.max_length:
                    raise GenResearchError(f"{where}: the prompt {prompt[:60]!r} is {count} tokens, more than the text encoder's "
                                           f"{encoder.max_length} (begin and end tokens included); shorten it")
            checked.append(prompt)
        return checked

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], device: torch.device | str) -> Condition:
        """{"hidden": [B, L, sum of hidden sizes], "pooled": [B, pooled size]} for a list of prompts."""
        hidden, pooled = [], None
        for encoder in self.encoders:
            states, pooled = encoder.encode(list(prompts), device, hidden_layer=self.hidden_layer)
            hidden.append(states)
        return {"hidden": torch.cat(hidden, dim=-1), "pooled": pooled}


def time_ids(original_size: Tensor, crop_coords: Tensor, target_size: tuple[int, int]) -> Tensor:
    """SDXL's add_time_ids [B, 6]: original (h, w), crop (top, left), target (h, w)."""
    target = torch.tensor(target_size, device=original_size.device, dtype=original_size.dtype).expand(len(original_size), 2)
    return torch.cat([original_size, crop_coords, target], dim=1).float()


def depth_condition(depth: Tensor, size: tuple[int, int]) -> Tensor:
    """A depth map [B, 1, H, W] at the latent grid, normalised per image to [-1, 1] (the SD2 depth pipeline's
    ``prepare_depth_map``: bicubic resize, then 2 * (d - min) / (max - min) - 1)."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise GenResearchError(f"depth maps must be [N, 1, H, W], got shape {tuple(depth.shape)}")
    d = F.interpolate(depth.float(), size=size, mode="bicubic", align_corners=False)
    low = d.amin(dim=(1, 2, 3), keepdim=True)
    high = d.amax(dim=(1, 2, 3), keepdim=True)
    return 2.0 * (d - low) / (high - low).clamp_min(1e-6) - 1.0


def low_resolution(images: Tensor, size: tuple[int, int]) -> Tensor:
    """The upscaler's input: images at the latent grid's size (area-averaged, i.e. antialiased, as a camera bins)."""
    return F.interpolate(images.float(), size=size, mode="area")


def noised_low_resolution(low_res: Tensor, noise_level: Tensor, scheduler: Any, generator: torch.Generator | None) -> Tensor:
    """The low-resolution image noised to ``noise_level`` by the upscaler's low-resolution DDPM schedule (SD x4 upscaler's
    ``low_res_scheduler.add_noise``): the noise augmentation that makes it robust to imperfect inputs."""
    gen = {"generator": generator} if generator is not None else {}
    noise = torch.randn(low_res.shape, device=low_res.device, dtype=low_res.dtype, **gen)
    return scheduler.add_noise(low_res, noise, noise_level.to(low_res.device))


__all__ = ["Condition", "PromptEncoders", "depth_condition", "low_resolution", "noised_low_resolution", "time_ids"]
