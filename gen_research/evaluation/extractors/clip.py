"""``clip``: image embeddings of a local transformers CLIPModel folder (``weights=FOLDER``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import as_rgb, to_unit_range
from gen_research.evaluation.extractors.common import FrozenExtractor, choose_resize_mode, mode_suffix, module_sha256, reject
from gen_research.evaluation.extractors.resize import DESCRIPTIONS, check_resize_mode, resize_images
from gen_research.registry import FEATURES

DEFAULT_RESIZE_MODE = "clean"  # PIL bicubic, as CLIPImageProcessor resizes (it requantises to uint8 after; clean does not)
# OpenAI CLIP's normalisation, used when the folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HOW_TO_GET = (
    "save one on a machine with internet with CLIPModel.from_pretrained(NAME).save_pretrained(FOLDER) "
    "(and CLIPImageProcessor.from_pretrained(NAME).save_pretrained(FOLDER)), copy FOLDER here and pass weights=FOLDER"
)


def _edge(value: Any, default: int) -> tuple[int, int] | int:
    """An image-processor size entry -> (height, width) for a fixed size, or an int for a shortest edge."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
    raise GenResearchError(f"unsupported size entry {value!r} in the CLIP folder's preprocessor_config.json")


class _Preprocess:
    """The CLIP image processor's steps: resize (shortest edge or fixed size, with ``resize_images``), center crop, normalise."""

    def __init__(self, folder: Path, image_size: int, resize_mode: str | None = None) -> None:
        config: dict[str, Any] = {}
        file = folder / "preprocessor_config.json"
        if file.is_file():
            try:
                config = json.loads(file.read_text())
            except (OSError, ValueError) as error:
                raise GenResearchError(f"cannot read {file} ({type(error).__name__}); fix or delete it (CLIP's defaults are then used)") from None
        self.source = "preprocessor_config.json" if file.is_file() else "CLIP defaults"
        self.mean = tuple(float(v) for v in config.get("image_mean", CLIP_MEAN))
        self.std = tuple(float(v) for v in config.get("image_std", CLIP_STD))
        self.resize = _edge(config.get("size"), image_size) if config.get("do_resize", True) else None
        self.crop = _edge(config.get("crop_size"), image_size) if config.get("do_center_crop", True) else None
        if isinstance(self.crop, int):
            self.crop = (self.crop, self.crop)
        self.resize_mode = choose_resize_mode("clip", resize_mode, DEFAULT_RESIZE_MODE, resizes=self.resize is not None,
                                              why_not=f"do_resize is false in {file}: leave resize_mode out")

    def describe(self) -> str:
        how = DESCRIPTIONS[self.resize_mode] if self.resize_mode else "no resize"
        return f"resize={self.resize} ({how}), crop={self.crop}, mean={self.mean}, std={self.std} ({self.source})"

    def __call__(self, images: Tensor) -> Tensor:
        if self.resize_mode is not None:
            h, w = images.shape[-2:]
            if isinstance(self.resize, int):  # shortest edge -> resize, aspect ratio kept
                scale = self.resize / min(h, w)
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
            else:
                size = self.resize
            x = as_rgb(resize_images(images, size, self.resize_mode) / 255.0)
        else:
            x = as_rgb(to_unit_range(images))
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:
                raise GenResearchError(f"CLIP center crop {ch}x{cw} is larger than the resized image {h}x{w}; check preprocessor_config.json")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std


@FEATURES.register("clip", "CLIP image embeddings (projection output, not normalised) of a local CLIPModel folder (weights=FOLDER)")
class CLIPFeatures(FrozenExtractor):
    """Image embeddings [N, projection_dim] of a transformers ``CLIPModel`` saved in a local folder.

    Preprocessing follows the folder's ``preprocessor_config.json`` (else CLIP's mean/std and the model's image
    size): resize of the shortest edge (or to a fixed size) with ``resize_images(..., resize_mode)`` (uint8, then
    clean-fid's resize, float 0..255, divided by 255), grey -> RGB, center crop, normalise. ``resize_mode`` defaults to
    ``clean`` (PIL bicubic, antialiased; CLIPImageProcessor's own resize is PIL bicubic too, requantised to uint8, so
    the two differ by under half a grey level). CLIP features measured before resize modes existed used torch's
    antialiased bicubic on the float images (none of the three modes, no quantisation); their cache key had no
    ``extractor_resize_mode`` and is not reused. Every image is quantised and resized, even one already at the size
    (the resize is then the identity). With ``do_resize: false`` nothing is resized and ``resize_mode`` is an error. Features are the raw projection embeddings (``get_image_features``), NOT L2-normalised:
    FID/KID on CLIP features (e.g. "FID_CLIP") use them as they are; normalise downstream for cosine scores.
    ``name`` is ``clip-<folder name>``, plus ``-<mode>`` for a non-default mode. Nothing is downloaded (``local_files_only``, ``HF_HUB_OFFLINE=1``).
    """

    num_logits = None

    def __init__(self, weights: str | None = None, resize: int | None = None, resize_mode: str | None = None,
                 image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        reject("clip", "resize", resize, "CLIP resizes to its own image size (preprocessor_config.json); leave resize out")
        check_resize_mode(resize_mode, "clip")  # before the model is loaded
        if weights is None:
            raise GenResearchError(f"the clip extractor needs weights=<folder with a saved CLIPModel>; {HOW_TO_GET}")
        folder = Path(weights).expanduser()
        self.folder = folder  # clip_score reuses this model when no other CLIP folder is given
        if not (folder / "config.json").is_file():
            raise GenResearchError(f"no CLIP model folder at {folder} (config.json missing); {HOW_TO_GET}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach the Hub
        from transformers import CLIPModel

        try:
            model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise GenResearchError(f"cannot load a CLIPModel from {folder} ({first}); {HOW_TO_GET}") from None
        # Only the image tower is used; the text tower is dropped to save memory.
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection
        self.preprocess = _Preprocess(folder, int(model.config.vision_config.image_size), resize_mode)
        self.resize_mode = self.preprocess.resize_mode
        self.name = f"clip-{folder.resolve().name}" + mode_suffix(self.resize_mode, DEFAULT_RESIZE_MODE)
        self.num_features = int(model.config.projection_dim)
        self.weights_sha256 = module_sha256(torch.nn.ModuleDict({"vision_model": self.vision_model, "visual_projection": self.visual_projection}))
        del model
        self.freeze()

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GenResearchError(f"{self.name}: expected grey or RGB images [N, 1|3, H, W], got shape {tuple(images.shape)}")
        pixel_values = self.preprocess(images).to(self.visual_projection.weight.dtype)
        # = CLIPModel.get_image_features(pixel_values).pooler_output (transformers 5 returns an output object).
        pooled = self.vision_model(pixel_values=pixel_values, return_dict=True).pooler_output
        return {"features": self.visual_projection(pooled).float()}

    def cache_key(self) -> dict[str, str]:
        return {
            "extractor": self.name,
            "extractor_weights": f"sha256:{self.weights_sha256}",
            "extractor_resize": "none" if self.resize_mode is None else str(self.preprocess.resize),
            "extractor_resize_mode": self.resize_mode or "none",
            "extractor_input": f"[-1,1]->[0,1]; grey->RGB; {self.preprocess.describe()}; raw projection embeddings",
        }


__all__ = ["CLIPFeatures"]
