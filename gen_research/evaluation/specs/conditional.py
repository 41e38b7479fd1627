"""Class-conditional metrics: does each sample look like its intended class, and per-class FID.

They need labels with the extractor outputs (``outputs["labels"]``): the conditioning label of each
generated image, and the true label of each real one.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image.fid import _compute_fid

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec
from gen_research.registry import METRICS


def _labels(outputs: dict[str, Tensor], metric_name: str) -> Tensor:
    labels = outputs.get("labels")
    if labels is None:
        raise GenResearchError(
            f"metric '{metric_name}' needs the class of every image: a class-conditional model, "
            "or --real/--fake folders with one subfolder per class"
        )
    return labels.long()


class _ClassAccuracy(Metric):
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        self.correct += (logits.argmax(dim=1) == labels).sum()
        self.total += labels.numel()

    def compute(self) -> Tensor:
        return self.correct.double() / self.total.clamp(min=1)


class Accuracy(Spec):
    """Fraction of generated images that the extractor's classifier assigns to their conditioning class."""

    name = "accuracy"
    needs = "logits"
    needs_reals = False
    needs_labels: ClassVar[bool] = True

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        if not extractor.num_logits:
            raise GenResearchError(f"metric 'accuracy' needs an extractor with class logits (classifier); '{extractor.name}' has none")
        return _ClassAccuracy()

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        if not real:
            metric.update(outputs["logits"], _labels(outputs, self.name))

    def compute(self, metric: Metric) -> dict[str, float]:
        return {"accuracy": float(metric.compute())}


class _PerClassFrechet(Metric):
    """Per-class sums and outer-product sums in float64 (summed across processes): FID within each class."""

    full_state_update = False

    def __init__(self, num_classes: int, num_features: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_sum", torch.zeros(num_classes, num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_outer", torch.zeros(num_classes, num_features, num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_count", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: Tensor, labels: Tensor, real: bool) -> None:
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise GenResearchError(f"class labels must lie in 0..{self.num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
        kind = "real" if real else "fake"
        features = features.double()
        one_hot = torch.nn.functional.one_hot(labels, self.num_classes).double()  # [N, C]
        getattr(self, f"{kind}_sum").add_(one_hot.T @ features)
        getattr(self, f"{kind}_outer").add_(torch.einsum("nc,nd,ne->cde", one_hot, features, features))
        getattr(self, f"{kind}_count").add_(one_hot.sum(0))

    def compute(self) -> Tensor:
        scores = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        for c in range(self.num_classes):
            n_real, n_fake = float(self.real_count[c]), float(self.fake_count[c])
            if n_real < 2 or n_fake < 2:
                continue  # undefined for that class; reported as nan and left out of the mean
            stats = []
            for kind, n in (("real", n_real), ("fake", n_fake)):
                mean = getattr(self, f"{kind}_sum")[c] / n
                cov = (getattr(self, f"{kind}_outer")[c] - n * torch.outer(mean, mean)) / (n - 1)
                stats += [mean, cov]
            scores[c] = _compute_fid(*stats)
        return scores


class IntraFID(Spec):
    """Intra-FID (Miyato & Koyama 2018): FID computed within each class, averaged over classes.

    Registered as ``intra_fid`` (the mean) and ``per_class_fid`` (the mean and ``fid_class_<k>`` for every class).
    """

    name = "intra_fid"
    needs = "features"
    needs_labels: ClassVar[bool] = True

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        num_classes = options.num_classes or extractor.num_logits
        if not num_classes:
            raise GenResearchError("metric 'intra_fid' needs the number of classes; evaluate labelled data (class subfolders or a labelled data module)")
        return _PerClassFrechet(int(num_classes), extractor.num_features)

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        metric.update(outputs["features"], _labels(outputs, self.name), real=real)

    def compute(self, metric: Metric) -> dict[str, float]:
        scores = metric.compute()
        valid = scores[~torch.isnan(scores)]
        if not len(valid):
            raise GenResearchError("intra_fid: no class has at least 2 real and 2 generated images; evaluate more images")
        return {"intra_fid": float(valid.mean()), **{f"fid_class_{c}": float(v) for c, v in enumerate(scores)}}


METRICS.add("accuracy", Accuracy, "classifier accuracy of class-conditional samples w.r.t. their intended class")
METRICS.add("intra_fid", IntraFID, "intra-FID: FID within each class, averaged over classes (conditional models)")
METRICS.add("per_class_fid", IntraFID, "intra-FID and the FID of every class (fid_class_<k>)")
