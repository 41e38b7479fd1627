"""ADA, adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data"): every image D sees, real or generated, goes through the same random, differentiable augmentations,
each applied with probability ``p``; ``p`` is tuned during training so that D's overfitting heuristic
``r_t = E[sign(D(real))]`` stays at ``target`` (0.6).

Written by hand after NVlabs' stylegan2-ada-pytorch (training/augment.py and training_loop.py), which is not a
package. Its defaults are kept:

- the ``bgc`` pipeline: blit (x-flip, 90-degree rotations, integer translation up to 1/8), geometric (isotropic scale
  ``2**N(0, 0.2)``, rotation uniform in (-180, 180) degrees before and after an anisotropic scale ``2**N(0, 0.2)``,
  each rotation with probability ``1 - sqrt(1 - p)``, fractional translation ``N(0, 0.125)``) and colour (brightness
  ``N(0, 0.2)``, contrast ``2**N(0, 0.5)``, luma flip, hue rotation up to 180 degrees, saturation ``2**N(0, 1)``);
- ``p`` adjusted every ``interval`` (4) D steps by ``sign(r_t - target) * batch * interval / (kimg * 1000)``
  (``kimg`` 500: p can go from 0 to 1 in 500k images), never below 0.

Simplifications, said here so nobody has to find them: the geometric transforms are one bilinear ``grid_sample``
with reflection padding (NVlabs pads, upsamples with a wavelet filter and downsamples again), and single-channel
images get brightness and contrast only (luma flip, hue and saturation are colour operations). Every draw comes from
the global RNG on the images' device, which the training checkpoints save, so a resumed run draws the same
augmentations; ``p`` and the sign statistics are buffers, so checkpoints carry them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_research.errors import GenResearchError

#: NVlabs' defaults (train.py: --target 0.6, ada_interval 4, ada_kimg 500).
ADA_DEFAULTS = {"target": 0.6, "interval": 4, "kimg": 500.0}


def check_ada_settings(model: str, settings: dict[str, Any] | None) -> dict[str, float] | None:
    """``settings`` with NVlabs' defaults filled in (None: ADA off), else a one-line error naming the bad key."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise GenResearchError(f"{model}: model.init_args.ada={settings!r} must be a mapping such as {{target: 0.6}} (or null for off)")
    unknown = sorted(set(settings) - set(ADA_DEFAULTS))
    if unknown:
        raise GenResearchError(f"{model}: model.init_args.ada has unknown key(s) {', '.join(unknown)}; it takes {', '.join(ADA_DEFAULTS)}")
    merged = {**ADA_DEFAULTS, **settings}
    target, interval, kimg = merged["target"], merged["interval"], merged["kimg"]
    if not (isinstance(target, (int, float)) and 0.0 < target < 1.0):
        raise GenResearchError(f"{model}: ada.target={target!r} must be in (0, 1); NVlabs uses 0.6")
    if not (isinstance(interval, (int, float)) and interval >= 1 and float(interval).is_integer()):  # YAML mappings come as floats
        raise GenResearchError(f"{model}: ada.interval={interval!r} must be a positive integer (D steps between p updates; NVlabs: 4)")
    if not (isinstance(kimg, (int, float)) and kimg > 0):
        raise GenResearchError(f"{model}: ada.kimg={kimg!r} must be positive (thousands of images for p to go 0 -> 1; NVlabs: 500)")
    return {"target": float(target), "interval": int(interval), "kimg": float(kimg)}


# ---- random draws (per image, each applied with its own probability) ------------------------------------------------
def _gate(n: int, probability: float | Tensor, device: torch.device) -> Tensor:
    """1.0 for the images an augmentation applies to (probability ``probability`` each), else 0.0; shape [n]."""
    return (torch.rand(n, device=device) < probability).float()


def _translation(tx: Tensor, ty: Tensor) -> Tensor:
    out = torch.eye(3, device=tx.device).repeat(len(tx), 1, 1)
    out[:, 0, 2], out[:, 1, 2] = tx, ty
    return out


def _scaling(sx: Tensor, sy: Tensor) -> Tensor:
    out = torch.eye(3, device=sx.device).repeat(len(sx), 1, 1)
    out[:, 0, 0], out[:, 1, 1] = sx, sy
    return out


def _rotation(angle: Tensor) -> Tensor:
    out = torch.eye(3, device=angle.device).repeat(len(angle), 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = cos, -sin, sin, cos
    return out


def geometric_matrices(n: int, height: int, width: int, p: float, device: torch.device) -> Tensor:
    """[n, 3, 3] maps from output to input coordinates in ``affine_grid``'s [-1, 1] units, NVlabs' bgc order."""
    matrix = torch.eye(3, device=device).repeat(n, 1, 1)
    flip = _gate(n, p, device) * torch.randint(0, 2, (n,), device=device)  # x-flip
    matrix = matrix @ _scaling(1 - 2 * flip, torch.ones(n, device=device))
    quarter = _gate(n, p, device) * torch.randint(0, 4, (n,), device=device)  # 90-degree rotations
    matrix = matrix @ _rotation(quarter * (math.pi / 2))
    shift = (torch.rand(2, n, device=device) * 2 - 1) * 0.125 * _gate(n, p, device)  # integer translation, max 1/8
    tx, ty = torch.round(shift[0] * width) * 2 / width, torch.round(shift[1] * height) * 2 / height
    matrix = matrix @ _translation(tx, ty)
    scale = torch.exp2(torch.randn(n, device=device) * 0.2 * _gate(n, p, device))  # isotropic scale
    matrix = matrix @ _scaling(scale, scale)
    p_rotate = 1 - math.sqrt(max(1 - p, 0.0))  # two chances to rotate: overall probability p
    matrix = matrix @ _rotation((torch.rand(n, device=device) * 2 - 1) * math.pi * _gate(n, p_rotate, device))
    aniso = torch.exp2(torch.randn(n, device=device) * 0.2 * _gate(n, p, device))  # anisotropic scale
    matrix = matrix @ _scaling(aniso, 1 / aniso)
    matrix = matrix @ _rotation((torch.rand(n, device=device) * 2 - 1) * math.pi * _gate(n, p_rotate, device))
    frac = torch.randn(2, n, device=device) * 0.125 * _gate(n, p, device)  # fractional translation
    return matrix @ _translation(frac[0] * 2, frac[1] * 2)


def colour_transform(images: Tensor, p: float) -> Tensor:
    """Brightness and contrast on every image kind; luma flip, hue and saturation on RGB (NVlabs' colour group)."""
    n, channels, device = images.size(0), images.size(1), images.device
    brightness = torch.randn(n, device=device) * 0.2 * _gate(n, p, device)
    contrast = torch.exp2(torch.randn(n, device=device) * 0.5 * _gate(n, p, device))
    out = images + brightness[:, None, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast[:, None, None, None] + mean
    if channels != 3:
        return out
    luma_axis = torch.full((3,), 1 / math.sqrt(3), device=device)  # the grey axis
    flat = out.flatten(2)  # [n, 3, HW]
    along = torch.einsum("c,ncp->np", luma_axis, flat)[:, None] * luma_axis[None, :, None]  # projection on the grey axis
    flip = _gate(n, p, device) * torch.randint(0, 2, (n,), device=device)
    flat = flat - 2 * flip[:, None, None] * along  # luma flip: mirror across the plane orthogonal to grey
    angle = (torch.rand(n, device=device) * 2 - 1) * math.pi * _gate(n, p, device)  # hue: rotate about the grey axis
    along = torch.einsum("c,ncp->np", luma_axis, flat)[:, None] * luma_axis[None, :, None]
    chroma = flat - along
    cross = torch.cross(luma_axis[None, :, None].expand_as(chroma), chroma, dim=1)
    chroma = chroma * torch.cos(angle)[:, None, None] + cross * torch.sin(angle)[:, None, None]
    saturation = torch.exp2(torch.randn(n, device=device) * 1.0 * _gate(n, p, device))
    flat = along + chroma * saturation[:, None, None]
    return flat.view_as(out)


def augment(images: Tensor, p: float) -> Tensor:
    """``images`` in [-1, 1] through the bgc pipeline, each augmentation applied with probability ``p``; differentiable."""
    if p <= 0:
        return images
    n, _, height, width = images.shape
    matrices = geometric_matrices(n, height, width, p, images.device)
    grid = F.affine_grid(matrices[:, :2].to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return colour_transform(warped, p)


class AdaptiveAugment(nn.Module):
    """ADA's state and feedback loop: ``p`` and the sign statistics of D's real logits since the last update.

    ``forward(images)`` augments with the current ``p``; ``observe(real_logits)`` accumulates ``sign(D(real))``;
    ``update(batch_images, reduce)`` every ``interval`` observations moves ``p`` (``reduce`` sums a tensor over DDP
    ranks so every rank takes the same step).
    """

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500.0) -> None:
        super().__init__()
        self.target, self.interval, self.kimg = target, interval, kimg
        self.register_buffer("p", torch.zeros(()))
        self.register_buffer("signs", torch.zeros(2))  # [sum of sign(D(real)), count] since the last update
        self.register_buffer("observations", torch.zeros((), dtype=torch.long))

    def forward(self, images: Tensor) -> Tensor:
        return augment(images, float(self.p))

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        self.signs += torch.stack([torch.sign(real_logits.float()).sum(), torch.tensor(float(real_logits.numel()), device=real_logits.device)])
        self.observations += 1

    @torch.no_grad()
    def update(self, batch_images: int, reduce: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor | None:
        """After ``interval`` observations: r_t, and ``p`` moved by ``sign(r_t - target) * batch * interval / (kimg*1000)``."""
        if int(self.observations) < self.interval:
            return None
        total, count = reduce(self.signs.clone()).unbind()
        r_t = total / count.clamp(min=1)
        step = torch.sign(r_t - self.target) * batch_images * self.interval / (self.kimg * 1000)
        self.p.copy_((self.p + step).clamp(min=0.0))
        self.signs.zero_()
        self.observations.zero_()
        return r_t


__all__ = ["ADA_DEFAULTS", "AdaptiveAugment", "augment", "check_ada_settings", "colour_transform", "geometric_matrices"]
