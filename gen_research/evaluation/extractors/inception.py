"""``inception``: the FID-standard InceptionV3 (TensorFlow weights ported by torch-fidelity), from a local file only."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import as_rgb
from gen_research.evaluation.extractors.common import FrozenExtractor, choose_resize_mode, mode_suffix, reject, sha256_file
from gen_research.evaluation.extractors.resize import DESCRIPTIONS, resize_images
from gen_research.registry import FEATURES
from gen_research.files.safe_load import load_plain

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256_PREFIX = "6726825d"  # the hash prefix in the official file name
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
TORCH_FIDELITY_NAME = "inception-v3-compat"
FEATURES_LIST = ["2048", "logits_unbiased"]
DEFAULT_RESIZE_MODE = "legacy_tensorflow"  # torch-fidelity's own resize: the published FID numbers
INPUT_SIZE = 299


def default_weights_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (TORCH_HOME defaults to ~/.cache/torch), where torch.hub would put the file."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def find_weights(weights: str | None) -> Path:
    """The weights file to load, or a one-line error naming the paths tried and how to obtain the file."""
    if weights is not None:
        given = Path(weights).expanduser()
        tried = [given / WEIGHTS_FILE if given.is_dir() else given]
    else:
        tried = [default_weights_dir() / WEIGHTS_FILE]
        hub_dir = Path(torch.hub.get_dir()).expanduser() / "checkpoints" / WEIGHTS_FILE  # differs after torch.hub.set_dir
        if hub_dir != tried[0]:
            tried.append(hub_dir)
    for path in tried:
        if path.is_file():
            return path
    raise GenResearchError(
        f"InceptionV3 weights {WEIGHTS_FILE} not found (tried: {', '.join(map(str, tried))}); nothing is downloaded: "
        f"on a machine with internet fetch {WEIGHTS_URL} and copy it into {default_weights_dir()}/ or pass its path as weights"
    )


@FEATURES.register("inception", "FID-standard InceptionV3 (torch-fidelity's TF port): 2048-d pool features + 1008 logits; local weights file only")
class InceptionFeatures(FrozenExtractor):
    """torch-fidelity's ``FeatureExtractorInceptionV3`` ("inception-v3-compat"): the network and resizing behind
    the published FID / KID / IS numbers.

    Images in [-1, 1] become uint8 0..255 (rounded), grey is repeated to RGB, and they are resized to 299 x 299 as
    ``resize_mode`` says (clean-fid's modes, ``extractors/resize.py``):

    - ``legacy_tensorflow`` (default; the published numbers): torch-fidelity's network resizes the uint8 batch itself
      with TensorFlow 1.x-compatible bilinear interpolation (unchanged from before resize modes existed).
    - ``clean`` / ``legacy_pytorch``: ``resize_images`` resizes to 299 first (PIL bicubic antialiased / torch bilinear,
      float, not requantised) and the float 0..255 result goes through the same network minus its resize step
      (torch-fidelity's forward accepts uint8 only; its TF1 resize is the identity at 299, so nothing else differs).
      This is clean-fid's resize with torch-fidelity's network: clean-fid's ``legacy_pytorch`` also swaps the network
      for pytorch-fid's, which this extractor never does.

    ``name`` is ``inception`` in the default mode, else ``inception-<mode>`` (``inception-clean``), so numbers of
    different modes never share a metric key; ``cache_key()`` records the mode. Outputs: ``features`` [N, 2048]
    (pool3) and ``logits`` [N, 1008] (``logits_unbiased``, what the Inception Score uses).

    Weights are read only from ``weights`` (a file, or a folder holding the official file) or
    ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``; their sha256 must start with
    ``6726825d``. There is no download and no fallback network. ``verify_hash=False`` is for tests only.
    """

    name = "inception"
    num_features = 2048
    num_logits = 1008

    def __init__(
        self,
        weights: str | None = None,
        resize: int | None = None,
        resize_mode: str | None = None,
        image_shape: tuple[int, int, int] | None = None,
        verify_hash: bool = True,
    ) -> None:
        super().__init__()
        reject("inception", "resize", resize, "InceptionV3 always resizes to 299x299 itself (as FID requires); leave resize out "
               "(resize_mode chooses how)")
        self.resize_mode = choose_resize_mode("inception", resize_mode, DEFAULT_RESIZE_MODE, resizes=True)
        self.name = "inception" + mode_suffix(self.resize_mode, DEFAULT_RESIZE_MODE)
        if image_shape is not None and int(image_shape[0]) not in (1, 3):
            raise GenResearchError(f"inception reads grey or RGB images, got {image_shape[0]} channels")
        path = find_weights(weights)
        self.weights_path = path
        self.weights_sha256 = sha256_file(path)
        if verify_hash and not self.weights_sha256.startswith(WEIGHTS_SHA256_PREFIX):
            raise GenResearchError(
                f"{path} is not the official InceptionV3 weights file (sha256 {self.weights_sha256[:12]}..., expected "
                f"{WEIGHTS_SHA256_PREFIX}...); download {WEIGHTS_URL} again"
            )
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            # torch-fidelity unpickles its weights with weights_only=False (a 32-bit hash prefix is no protection):
            # read the file as plain tensors here and hand it those, re-serialised in memory (never downloads).
            plain = io.BytesIO()
            torch.save(load_plain(path, "InceptionV3 weights"), plain)
            plain.seek(0)
            self.net = FeatureExtractorInceptionV3(TORCH_FIDELITY_NAME, list(FEATURES_LIST), feature_extractor_weights_path=plain)
        except GenResearchError:  # needs pickled objects: refused, named
            raise
        except Exception as error:  # a foreign or truncated file: torch.load / load_state_dict raise many types
            raise GenResearchError(
                f"cannot load InceptionV3 weights from {path} ({type(error).__name__}); use the official {WEIGHTS_FILE} ({WEIGHTS_URL})"
            ) from None
        self.freeze()

    @staticmethod
    def to_uint8(images: Tensor) -> Tensor:
        """[-1, 1] float -> uint8 0..255 (rounded, so images that came from uint8 data map back exactly), RGB."""
        x = ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return as_rgb(x)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GenResearchError(f"inception: expected grey or RGB images [N, 1|3, H, W], got shape {tuple(images.shape)}")
        if self.resize_mode == DEFAULT_RESIZE_MODE:
            features, logits = self.net(self.to_uint8(images))
        else:
            resized = as_rgb(resize_images(images, (INPUT_SIZE, INPUT_SIZE), self.resize_mode))
            features, logits = self._forward_resized(resized)
        return {"features": features.float(), "logits": logits.float()}

    def _forward_resized(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """torch-fidelity's ``FeatureExtractorInceptionV3.forward`` from its normalisation on, for float 0..255 RGB
        input already at 299 x 299 (its forward refuses anything but uint8; the TF1 resize it would apply first is
        the identity at 299). Returns (pool3 [N, 2048], logits_unbiased [N, 1008])."""
        net = self.net
        x = x.to(net.feature_extractor_internal_dtype)
        x = (x - 128) / 128
        for layer in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                      "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                      "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"):
            x = getattr(net, layer)(x)
        pool = torch.flatten(x, 1)
        return pool.to(torch.float32), pool.mm(net.fc.weight.T).to(torch.float32)

    def cache_key(self) -> dict[str, str]:
        return {
            "extractor": self.name,
            "extractor_weights": f"sha256:{self.weights_sha256}",
            "extractor_resize": "299 (torch-fidelity TF1-compatible bilinear)" if self.resize_mode == DEFAULT_RESIZE_MODE
            else f"299 ({DESCRIPTIONS[self.resize_mode]})",
            "extractor_resize_mode": str(self.resize_mode),
            "extractor_input": f"[-1,1]->uint8 round; grey->RGB; {TORCH_FIDELITY_NAME} {'+'.join(FEATURES_LIST)}",
        }


__all__ = ["DEFAULT_RESIZE_MODE", "InceptionFeatures", "WEIGHTS_FILE", "WEIGHTS_URL", "default_weights_dir", "find_weights"]
