"""clean-FID's resize modes (Parmar, Zhang & Zhu, "On Aliased Resizing and Surprising Subtleties in GAN Evaluation",
CVPR 2022) as a preprocessing step any extractor can use.

Every mode starts by quantising the images as image files are: ``uint8 = clamp(round((x + 1) * 127.5), 0, 255)`` for
``x`` in [-1, 1] (the same rounding as ``InceptionFeatures.to_uint8``). It then resizes each channel to ``size`` =
(height, width) and returns float32 in 0..255 units, NOT quantised again: exactly the array clean-fid hands its
network in that mode.

- ``clean``: ``cleanfid.resize.make_resizer("PIL", False, "bicubic", size)``: Pillow's bicubic filter (antialiased:
  its support widens with the downscale factor) on each channel as a mode-"F" float32 image, then clipped to 0..255.
  The same Pillow calls as clean-fid, so the result is bit-identical to it.
- ``legacy_pytorch``: ``make_resizer("PyTorch", False, "bilinear", size)``: ``F.interpolate(bilinear,
  align_corners=False)`` without antialiasing on the uint8 values as float32, clipped to 0..255 (pytorch-fid's resize).
- ``legacy_tensorflow``: TensorFlow 1.x ``resize_bilinear(align_corners=False)`` (source pixel = output pixel * in/out,
  no half-pixel offset, no antialiasing), computed with torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``
  (the resize inside torch-fidelity's InceptionV3, behind the published FID numbers). clean-fid has no resizer for
  this mode: it leaves the resize to its TF-ported network (``build_resizer`` returns the identity).

When the input already has the target size, every mode returns the quantised image unchanged (float32): Pillow's
resize returns a copy at the same size (clean-fid still calls it), bilinear at scale 1 samples every pixel centre in
both conventions. Grey images stay grey (each channel is resized on its own, so resizing then repeating to RGB equals
repeating then resizing).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError

RESIZE_MODES = ("clean", "legacy_tensorflow", "legacy_pytorch")

DESCRIPTIONS = {
    "clean": "clean-fid 'clean': uint8, then PIL bicubic (antialiased) per channel on float32, clip 0..255, no requantisation",
    "legacy_tensorflow": "TF1 resize_bilinear(align_corners=False) on uint8 values (torch-fidelity's, as in the TF FID code)",
    "legacy_pytorch": "clean-fid 'legacy_pytorch': uint8, then F.interpolate bilinear (align_corners=False, no antialias)",
}


def check_resize_mode(mode: str | None, extractor: str) -> None:
    """A one-line GenResearchError unless ``mode`` is None or one of RESIZE_MODES."""
    if mode is not None and (not isinstance(mode, str) or mode not in RESIZE_MODES):
        raise GenResearchError(f"{extractor}: unknown resize_mode {mode!r}; choose one of {', '.join(RESIZE_MODES)} (or leave it out)")


def quantize(images: Tensor) -> Tensor:
    """[-1, 1] float -> uint8 0..255, rounded (images that came from uint8 data map back exactly)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _pil_bicubic(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[M, H, W] float32 -> [M, h, w] float32: Pillow's mode-"F" bicubic resize of every plane, as clean-fid does it."""
    from PIL import Image

    height, width = size
    out = np.empty((values.shape[0], height, width), dtype=np.float32)
    for index, plane in enumerate(values):
        # Image.fromarray on float32 gives mode "F" (clean-fid passes mode="F"; Pillow 13 infers it). PIL sizes are (w, h).
        resized = Image.fromarray(plane).resize((width, height), resample=Image.BICUBIC)
        out[index] = np.asarray(resized, dtype=np.float32)
    return out


def resize_images(images: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Images [N, C, H, W] in [-1, 1] -> float32 [N, C, h, w] in 0..255, resized as clean-fid's ``mode`` does.

    ``size`` is (height, width). The result is on the device of ``images`` (the ``clean`` mode runs Pillow on the CPU).
    """
    check_resize_mode(mode, "resize_images")
    if mode is None:
        raise GenResearchError("resize_images: resize_mode is required; choose one of " + ", ".join(RESIZE_MODES))
    if images.dim() != 4:
        raise GenResearchError(f"resize_images: expected images [N, C, H, W], got shape {tuple(images.shape)}")
    height, width = (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise GenResearchError(f"resize_images: size must be two positive integers (height, width), got {size!r}")
    x = quantize(images).float()
    if mode == "clean":
        n, c, h, w = x.shape
        planes = x.detach().cpu().reshape(n * c, h, w).numpy()
        out = torch.from_numpy(_pil_bicubic(planes, (height, width))).reshape(n, c, height, width).to(images.device)
    elif mode == "legacy_pytorch":
        out = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    else:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        out = interpolate_bilinear_2d_like_tensorflow1x(x, size=(height, width), align_corners=False)
    return out.clamp(0.0, 255.0)


__all__ = ["DESCRIPTIONS", "RESIZE_MODES", "check_resize_mode", "quantize", "resize_images"]
