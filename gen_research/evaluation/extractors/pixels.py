"""``pixels``: raw pixel values as features (a sanity baseline: FID on pixels, nearest neighbours in pixel space)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import to_unit_range
from gen_research.evaluation.extractors.common import FrozenExtractor, reject
from gen_research.registry import FEATURES


@FEATURES.register("pixels", "raw pixels in [0, 1], flattened (optionally resized to resize x resize first); no weights")
class PixelFeatures(FrozenExtractor):
    """Images mapped to [0, 1], optionally resized (antialiased bilinear) to ``resize`` x ``resize``, flattened to C*H*W.

    ``name`` is ``pixels`` or ``pixels-<resize>``: numbers computed at different sizes never share a key.
    ``num_features`` is known once the image shape is (``image_shape`` argument or the first batch).
    """

    num_logits = None

    def __init__(self, weights: str | None = None, resize: int | None = None, image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        reject("pixels", "weights", weights, "pixel features have no network; leave weights out")
        if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
            raise GenResearchError(f"pixels: resize must be a positive integer (got {resize!r})")
        self.resize = resize
        self.name = "pixels" if resize is None else f"pixels-{resize}"
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
        x = to_unit_range(images)
        if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)
        return {"features": x.flatten(1)}

    def cache_key(self) -> dict[str, str]:
        return {
            "extractor": self.name,
            "extractor_weights": "none",
            "extractor_resize": str(self.resize) if self.resize else "none",
            "extractor_input": "[-1,1]->[0,1]; antialiased bilinear resize (align_corners=False) when resize is set; flatten C*H*W",
        }


__all__ = ["PixelFeatures"]
