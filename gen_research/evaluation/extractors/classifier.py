"""``classifier``: penultimate features and logits of a domain classifier trained with this framework."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.evaluation.extractors.common import FrozenExtractor, choose_resize_mode, mode_suffix, sha256_state_dict
from gen_research.evaluation.extractors.resize import DESCRIPTIONS, check_resize_mode, resize_images
from gen_research.registry import FEATURES

DEFAULT_RESIZE_MODE = "clean"
HOW_TO_TRAIN = (
    "train one with `python -m gen_research fit --config experiments/classifier_mnist5k.yaml`, "
    "then pass weights=runs/classifier_mnist5k/<run>/checkpoints/best-*.ckpt"
)


def _load_classifier(path: Path):
    """Rebuild a ``classifier`` model from a Lightning checkpoint: its hparams, then its state_dict (EMA weights when EMA ran)."""
    from gen_research.registry import MODELS, load_builtins
    from gen_research.training.run_folder import read_checkpoint

    load_builtins()  # the network comes from the model registry: metrics do not import model code
    Classifier = MODELS.get("classifier")  # noqa: N806

    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    saved_class = hparams.get("_class_path")
    expected_class = f"{Classifier.__module__}.{Classifier.__qualname__}"
    if (saved_class and saved_class != expected_class) or "feature_name" not in hparams:
        raise GenResearchError(
            f"{path} is not a checkpoint of the classifier model (written by {saved_class or 'another model'}); {HOW_TO_TRAIN}"
        )
    accepted = set(inspect.signature(Classifier.__init__).parameters) - {"self"}
    model = Classifier(**{k: v for k, v in hparams.items() if k in accepted})
    # Lightning's state_dict holds the EMA weights when the EMA callback ran (the training weights are in
    # current_model_state); the EMA weights are the ones validated and selected as best.
    state_dict = checkpoint["state_dict"]
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise GenResearchError(f"classifier checkpoint {path} does not match its own hyperparameters ({first}); re-train it") from None
    return model, sha256_state_dict(state_dict)


@FEATURES.register("classifier", "penultimate features + logits of a `classifier` model checkpoint (weights=PATH.ckpt); name = its feature_name")
class ClassifierFeatures(FrozenExtractor):
    """Features ``[N, feature_dim]`` (penultimate layer, after its activation) and logits ``[N, num_classes]``.

    ``weights`` is a Lightning checkpoint of the ``classifier`` model; ``name`` is its ``feature_name``
    hyperparameter (e.g. ``classifier-mnist5k``). Images must have the classifier's training shape, unless
    ``resize`` names the classifier's side: then every image (real and generated alike) goes through
    ``resize_images(..., resize_mode)`` (quantised to uint8 as an image file would be, resized where its size differs,
    mapped back to [-1, 1]), e.g. ``resize: 28`` to compare a 32x32 GAN on the 28x28 MNIST classifier. Its numbers are
    then comparable with other resized runs only, which the cache key and the metric records say.

    ``resize_mode`` (clean-fid's modes, ``extractors/resize.py``) defaults to ``clean`` (PIL bicubic, antialiased).
    Resized evaluations measured before resize modes existed used torch's antialiased bilinear on the float images
    (none of the three modes, no quantisation). A non-default mode is appended to the name
    (``classifier-mnist5k-legacy_pytorch``); a mode without ``resize`` is an error (nothing is resized).
    """

    def __init__(self, weights: str | None = None, resize: int | None = None, resize_mode: str | None = None,
                 image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        check_resize_mode(resize_mode, "classifier")  # before the checkpoint is read
        if weights is None:
            raise GenResearchError(f"the classifier extractor needs weights=<classifier checkpoint .ckpt>; {HOW_TO_TRAIN}")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise GenResearchError(f"classifier checkpoint not found: {path}; {HOW_TO_TRAIN}")
        self.weights_path = path
        self.model, self.weights_sha256 = _load_classifier(path)
        self.resize_mode = choose_resize_mode(str(self.model.hparams.feature_name), resize_mode, DEFAULT_RESIZE_MODE, resizes=resize is not None)
        self.name = str(self.model.hparams.feature_name) + mode_suffix(self.resize_mode, DEFAULT_RESIZE_MODE)
        self.image_shape = tuple(self.model.image_shape)
        self.num_features = int(self.model.hparams.feature_dim)
        self.num_logits = int(self.model.num_classes)
        # The batch field its logits predict: "label" (classes) or "domain" (a domain classifier); the evaluation
        # hands class metrics that field (for translations, the requested target_domain: evaluation/feeder.py).
        self.label_field = str(self.model.hparams.get("label_field", "label"))
        self.resize = resize
        if resize is not None and (self.image_shape[1] != self.image_shape[2] or resize != self.image_shape[1]):
            raise GenResearchError(f"the classifier {self.name!r} reads {self.image_shape[1]}x{self.image_shape[2]} images: "
                                   f"resize={resize} must be {self.image_shape[1]} (or leave resize out)")
        if image_shape is not None and resize is None:
            self._check_shape(tuple(int(s) for s in image_shape))
        self.freeze()

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if shape != self.image_shape:
            c, h, w = self.image_shape
            raise GenResearchError(
                f"the classifier {self.name!r} ({self.weights_path}) was trained on images of shape {self.image_shape}, "
                f"but got {shape}; evaluate data of shape {c}x{h}x{w} or train a classifier on this data"
            )

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4:
            raise GenResearchError(f"{self.name}: expected images [N, C, H, W], got shape {tuple(images.shape)}")
        if self.resize_mode is not None:  # 0..255 -> [-1, 1], the classifier's input range
            images = resize_images(images, self.image_shape[1:], self.resize_mode) / 127.5 - 1.0
        self._check_shape(tuple(images.shape[1:]))
        x = images.to(next(self.model.parameters()).dtype)
        features = self.model.features(x)
        logits = self.model.classify(features)
        return {"features": features.float(), "logits": logits.float()}

    def cache_key(self) -> dict[str, str]:
        return {
            "extractor": self.name,
            "extractor_weights": f"sha256:{self.weights_sha256}",
            "extractor_resize": "none" if self.resize_mode is None else f"{self.resize} ({DESCRIPTIONS[self.resize_mode]})",
            "extractor_resize_mode": self.resize_mode or "none",
            "extractor_labels": self.label_field,
            "extractor_input": f"[-1,1] as is, shape {'x'.join(map(str, self.image_shape))}; penultimate (after SiLU) + logits",
        }


__all__ = ["ClassifierFeatures"]
