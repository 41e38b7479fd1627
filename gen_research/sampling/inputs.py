"""Inputs of the conditional sampling modes: images to start from (img2img) or complete (inpainting), and masks.

Masks here follow the diffusers / Stable Diffusion convention on disk (a white pixel is one to generate), and
are returned as ``known_mask`` tensors (1 = keep the input pixel), which is what the sampler takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gen_research.data.batch import as_fields
from gen_research.errors import GenResearchError

BUILTIN_MASKS = ("center", "left", "right", "top", "bottom")


def known_mask(spec: str, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """[1, 1, H, W] mask, 1 = known pixel. ``spec``: a built-in name (the region named is generated) or a PNG file."""
    _, h, w = image_shape
    mask = torch.ones(1, 1, h, w)
    if spec == "center":
        mask[..., h // 4 : h - h // 4, w // 4 : w - w // 4] = 0
    elif spec == "left":
        mask[..., :, : w // 2] = 0
    elif spec == "right":
        mask[..., :, w // 2 :] = 0
    elif spec == "top":
        mask[..., : h // 2, :] = 0
    elif spec == "bottom":
        mask[..., h // 2 :, :] = 0
    else:
        mask = _mask_file(Path(spec), h, w)
    if mask.all():
        raise GenResearchError(f"--mask {spec} leaves no pixel to generate; white marks the pixels to generate")
    return mask


def _mask_file(path: Path, h: int, w: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise GenResearchError(f"--mask {path}: no such file; give a PNG (white = generate) or one of {', '.join(BUILTIN_MASKS)}")
    try:
        with Image.open(path) as opened:
            image = opened.convert("L")  # decodes the whole file: a truncated PNG fails here
    except (UnidentifiedImageError, OSError) as error:
        raise GenResearchError(f"--mask {path} is not an image ({error}); give a PNG, white = generate") from None
    if image.size != (w, h):  # never stretched: a mask drawn for other images would mark the wrong pixels
        raise GenResearchError(f"--mask {path} is {image.size[0]}x{image.size[1]} pixels; the model makes {w}x{h} images: give a mask of that size")
    generate = torch.tensor(list(image.getdata()), dtype=torch.float32).reshape(1, 1, h, w) >= 128
    return (~generate).float()


def input_images(source: str, count: int, datamodule: Any, image_shape: tuple[int, int, int], field: str = "image",
                 flag: str = "--input") -> torch.Tensor:
    """The first ``count`` images of a data split (train/val/test; its batch ``field``, e.g. ``depth``) or of an image
    folder, in [-1, 1]."""
    from gen_research.evaluation import sources

    if source in ("train", "val", "test"):
        datamodule.setup("fit" if source != "test" else "test")
        dataset = getattr(datamodule, f"{source}_set")
    else:
        c, h, w = image_shape
        if h != w:
            raise GenResearchError(f"{flag} {source}: folder images are resized to squares; this model makes {h}x{w} images")
        dataset = sources.folder_dataset(sources.folder_images(source, flag), h, grayscale=c == 1)
        field = "image"
    if len(dataset) < count:
        raise GenResearchError(f"{flag} {source} has {len(dataset)} images, fewer than --num-images {count}; lower --num-images")
    first = as_fields(dataset[0])
    if field not in first:
        raise GenResearchError(f"{flag} {source}: the data's items have no {field!r} field (they have {', '.join(first)}); "
                               f"pass a folder of images or data that provides {field}")
    images = torch.stack([as_fields(dataset[i])[field] for i in range(count)])  # dict or (image, label) items
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise GenResearchError(f"{flag} {source} gives {tuple(images.shape[1:])} images; the model needs {tuple(image_shape)}")
    return images


__all__ = ["BUILTIN_MASKS", "input_images", "known_mask"]
