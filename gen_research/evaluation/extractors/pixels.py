"""``pixels``: raw pixel values as features (a sanity baseline: FID on pixels, nearest neighbours in pixel space)."""

from __future__ import annotations

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import to_unit_range
from gen_research.evaluation.extractors.common import FrozenExtractor, choose_resize_mode, mode_suffix, reject
from gen_research.evaluation.extractors.resize import DESCRIPTIONS, resize_images

DEFAULT_RESIZE_MODE = "clean"
from gen_research.registry import FEATURES


@FEATURES.register("pixels", "raw pixels in [0, 1], flattened (optionally resized to resize x resize first); no weights")
class PixelFeatures(FrozenExtractor):
    """Images mapped to [0, 1], optionally resized to ``resize`` x ``resize``, flattened to C*H*W.

    With ``resize`` set, every image goes through ``resize_images(..., resize_mode)`` (clean-fid's modes,
    ``extractors/resize.py``: quantised to uint8, resized, float 0..255) and is divided by 255; ``resize_mode``
    defaults to ``clean`` (PIL bicubic, antialiased). Resized pixel features measured before resize modes existed
    used torch's antialiased bilinear on the float images (none of the three modes, no quantisation). Without
    ``resize`` the values are ``(x + 1) / 2`` as they are, and a ``resize_mode`` is an error (nothing is resized).

    ``name`` is ``pixels``, ``pixels-<resize>``, or ``pixels-<resize>-<mode>`` for a non-default mode: numbers computed
    at different sizes or modes never share a key.
    ``num_features`` is known once the image shape is (``image_shape`` argument or the first batch).
    """

    num_logits = None

    def __init__(self, weights: str | None = None, resize: int | None = None, resize_mode: str | None = None,
                 image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        reject("pixels", "weights", weights, "pixel features have no network; leave weights out")
        if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
            raise GenResearchError(f"pixels: resize must be a positive integer (got {resize!r})")
        self.resize = resize
        self.resize_mode = choose_resize_mode("pixels", resize_mode, DEFAULT_RESIZE_MODE, resizes=resize is not None)
        self.name = "pixels" if resize is None else f"pixels-{resize}" + mode_suffix(self.resize_mode, DEFAULT_RESIZE_MODE)
        self.num_features = 0
        if image_shape is not None:
            self.num_features = self._dim(tuple(int(s) for s in image_shape))
        self.freeze()

    def _dim(self, shape: tuple[int, ...]) -> int:
        c, h, w = shape
        return c * self.resize * self.resize if self.resize else c * h * w

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4:
            raise GenResearchError(f"pixels: expected images [N, C, H, W], got shape {tuple(images.shape)}")
        dim = self._dim(tuple(images.shape[1:]))
        if self.num_features and dim != self.num_features:
            raise GenResearchError(
                f"pixels: images of shape {tuple(images.shape[1:])} give {dim} features but this extractor was set up "
                f"for {self.num_features}; use one image size per evaluation (or set resize)"
            )
        self.num_features = dim
        if self.resize_mode is not None:
            x = resize_images(images, (self.resize, self.resize), self.resize_mode) / 255.0
        else:
            x = to_unit_range(images)
        return {"features": x.flatten(1)}

    def cache_key(self) -> dict[str, str]:
        return {
            "extractor": self.name,
            "extractor_weights": "none",
            "extractor_resize": f"{self.resize} ({DESCRIPTIONS[self.resize_mode]})" if self.resize_mode else "none",
            "extractor_resize_mode": self.resize_mode or "none",
            "extractor_input": "[-1,1]->[0,1] (via uint8 and resize_images/255 when resize is set); flatten C*H*W",
        }


__all__ = ["PixelFeatures"]
