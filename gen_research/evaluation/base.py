"""The two interfaces evaluation is built from: feature extractors and feature metrics.

One feature pass: an :class:`~gen_research.evaluation.evaluator.Evaluator` runs the extractor once per image
and hands the same outputs to every metric. Every reported number is keyed ``<metric>/<extractor>``
(``fid/inception``, ``kid/classifier-mnist5k``): numbers from different extractors are not comparable,
and nothing ever substitutes one extractor for another.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn
from torchmetrics import Metric

from gen_research.evaluation.options import EvalOptions  # noqa: F401  (re-exported; defined without torch for evaluate --help)

Output = Literal["features", "logits"]


class FeatureExtractor(nn.Module):
    """Maps images in [-1, 1] ([N, C, H, W], float) to ``{"features": [N, D]}`` and, for classifiers, ``"logits": [N, K]``.

    Subclasses set ``name`` (used in every metric key), ``num_features`` and ``num_logits`` (None when
    the extractor has no class logits), do their own resizing / channel handling inside ``forward``,
    and describe in :meth:`cache_key` everything that changes their output (weights hash, resize).
    Extractors are frozen, in eval mode, and run under ``torch.no_grad``. ``label_field`` is the batch field
    (data/batch.py) its logits predict, which class metrics compare them with: ``label``, or ``domain`` for a domain
    classifier.
    """

    name: str = "features"
    num_features: int = 0
    num_logits: int | None = None
    label_field: str = "label"

    def forward(self, images: Tensor) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def cache_key(self) -> dict[str, str]:
        """Everything about this extractor that changes its outputs (for the reference-statistics cache)."""
        return {"extractor": self.name}

    @property
    def outputs(self) -> tuple[Output, ...]:
        return ("features", "logits") if self.num_logits else ("features",)


class FeatureMetric:
    """A metric computed from extractor outputs, wrapping a torchmetrics ``Metric`` (which syncs across processes).

    ``build`` makes the torchmetrics object; ``update`` feeds it one batch of extractor outputs of real or
    generated images; ``compute`` returns plain floats keyed by short names (``{"kid": .., "kid_std": ..}``);
    the evaluator appends ``/<extractor name>``.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[Output] = "features"
    needs_reals: ClassVar[bool] = True

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        metric.update(outputs[self.needs], real=real)

    def compute(self, metric: Metric) -> dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError


class IdentityFeatures(nn.Module):
    """Hands precomputed features to a torchmetrics image metric (FID, KID, IS, MiFID) unchanged.

    torchmetrics accepts ``feature=<nn.Module>``; giving it this module lets all metrics share the
    evaluator's single feature pass instead of each running its own network.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def to_unit_range(images: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] float."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def as_rgb(images: Tensor) -> Tensor:
    """Grey images repeated to 3 channels (networks trained on RGB)."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


__all__ = ["EvalOptions", "FeatureExtractor", "FeatureMetric", "IdentityFeatures", "as_rgb", "to_unit_range"]
