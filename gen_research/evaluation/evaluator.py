"""One feature pass for many metrics: the extractor sees every image once; every metric gets its outputs.

Used by the ``evaluate`` command and by :class:`~gen_research.training.callbacks.evaluation.EvaluationCallback`.
Reference (real) outputs are computed once and cached on disk, keyed by everything that changes them.
Under DDP each process feeds its share of reals and fakes and torchmetrics gathers the states.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor, FeatureMetric
from gen_research.registry import METRICS

DEFAULT_METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def parse_metric_names(text: str | Iterable[str]) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise GenResearchError("no metrics given; pass e.g. --metrics fid,kid,precision,recall")
    for name in names:
        METRICS.entry(name)  # unknown names fail here with "did you mean"
    return names


class Evaluator:
    """Feeds extractor outputs of reals, fakes (and training images, pairs) to the requested metrics."""

    def __init__(self, extractor: FeatureExtractor, metric_names: Iterable[str], options: EvalOptions | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.extractor = extractor.to(device).eval()
        self.options = options or EvalOptions()
        self.device = torch.device(device)
        self.requested = parse_metric_names(metric_names)
        self.specs: list[FeatureMetric] = []
        for name in self.requested:
            spec_class = METRICS.get(name)
            if not any(type(spec) is spec_class for spec in self.specs):  # precision+recall share one k-NN pass
                self.specs.append(spec_class())
        self.metrics = [spec.build(self.extractor, self.options).to(self.device) for spec in self.specs]
        #: After :meth:`compute`: the curves the metrics drew (fid_infinity's FID vs 1/N, ...), keyed
        #: ``<curve>/<extractor>`` like the numbers; each a dict ``x``, ``y`` ({series: values}), ``xlabel``, ``ylabel``,
        #: ``title`` and what the metric adds (plain floats), drawn by :func:`gen_research.evaluation.plots.plot_curves`.
        self.curves: dict[str, dict[str, Any]] = {}

    # What the caller must provide.
    @property
    def needs_reals(self) -> bool:
        return any(spec.needs_reals and self.is_feature_based(spec) for spec in self.specs)

    @property
    def needs_train(self) -> bool:
        return any(getattr(spec, "needs_train", False) for spec in self.specs)

    @property
    def needs_fakes(self) -> bool:
        """Generated images are needed: by feature metrics or by metrics on raw images (cas, clip_score)."""
        return any(self.is_feature_based(spec) or getattr(spec, "needs_images", False) for spec in self.specs)

    @property
    def needs_generator(self) -> bool:
        return any(getattr(spec, "needs_generator", False) for spec in self.specs)

    @property
    def needs_labels(self) -> bool:
        return any(getattr(spec, "needs_labels", False) for spec in self.specs)

    @property
    def label_metrics(self) -> list[str]:
        """The requested metric names that need class labels (for error messages)."""
        return [name for name in self.requested if getattr(METRICS.get(name), "needs_labels", False)]

    @property
    def needs_conditions(self) -> bool:
        """Conditional metrics (cfid) that take a translator's source images as the condition of each image
        (``outputs["condition_features"]``); for a class-conditional model the classes (labels) are the condition."""
        return any(getattr(spec, "needs_conditions", False) for spec in self.specs)

    @property
    def condition_metrics(self) -> list[str]:
        """The requested metric names conditioned on source images or classes (for error messages)."""
        return [name for name in self.requested if getattr(METRICS.get(name), "needs_conditions", False)]

    @property
    def needs_pairs(self) -> bool:
        """(generated, original) pairs: translations with their targets, reconstructions with their inputs."""
        return any(self.is_paired(spec) and getattr(spec, "pairs", "output") == "output" for spec in self.specs)

    @property
    def needs_cycle_pairs(self) -> bool:
        """(cycle reconstruction, source) pairs of a translator."""
        return any(self.is_paired(spec) and getattr(spec, "pairs", "output") == "cycle" for spec in self.specs)

    @staticmethod
    def is_paired(spec: FeatureMetric) -> bool:
        return bool(getattr(spec, "paired", False))

    @classmethod
    def is_feature_based(cls, spec: FeatureMetric) -> bool:
        """Fed extractor outputs (not image pairs, raw images or a generator model)."""
        return not (cls.is_paired(spec) or getattr(spec, "needs_generator", False) or getattr(spec, "needs_images", False))

    def _image_specs(self) -> list[tuple[FeatureMetric, Any]]:
        return [(spec, metric) for spec, metric in zip(self.specs, self.metrics) if getattr(spec, "needs_images", False)]

    @property
    def needs_texts(self) -> bool:
        return any(getattr(spec, "needs_texts", False) for spec, _ in self._image_specs())

    @property
    def needs_raw_reals(self) -> bool:
        """Metrics that need the real images themselves (CAS tests a classifier on them), not their features."""
        return any(spec.needs_reals for spec, _ in self._image_specs())

    # Feeding.
    @torch.no_grad()
    def extract(self, images: Tensor) -> dict[str, Tensor]:
        outputs = self.extractor(images.to(self.device, torch.float32))
        return {key: outputs[key].float() for key in self.extractor.outputs}

    def add_outputs(self, outputs: dict[str, Tensor], role: str) -> None:
        """``role``: "real" (reference set), "fake" (generated) or "train" (memorization's training set)."""
        outputs = {k: v.to(self.device) for k, v in outputs.items()}
        for spec, metric in zip(self.specs, self.metrics):
            if not self.is_feature_based(spec):
                continue
            if role == "train":
                if getattr(spec, "needs_train", False):
                    spec.update_train(metric, outputs)
            elif role == "fake" or spec.needs_reals:
                spec.update(metric, outputs, real=role == "real")

    def add_images(self, images: Tensor, role: str, labels: Tensor | None = None, texts: list[str] | None = None,
                   conditions: Tensor | None = None) -> None:
        """Extract once and feed every metric; ``labels`` (class of each image) for class-conditional metrics,
        ``texts`` (a caption per image) for text-image metrics, ``conditions`` (the source image of each translation
        or paired target) for conditional metrics: their features go in as ``condition_features``."""
        if any(self.is_feature_based(spec) for spec in self.specs):
            outputs = self.extract(images)
            if labels is not None:
                outputs["labels"] = labels.to(self.device)
            if conditions is not None and self.needs_conditions:
                outputs["condition_features"] = self.extract(conditions)["features"]
            self.add_outputs(outputs, role)
        if role in ("real", "fake"):
            self.add_raw_images(images, role, labels, texts)

    def add_raw_images(self, images: Tensor, role: str, labels: Tensor | None = None, texts: list[str] | None = None) -> None:
        """Feed only the metrics that use images themselves (cas, clip_score), not extractor features."""
        for spec, metric in self._image_specs():
            if role == "fake" or spec.needs_reals:
                spec.update_images(metric, images.to(self.device), None if labels is None else labels.to(self.device), texts, real=role == "real")

    def add_pairs(self, generated: Tensor, originals: Tensor, pairs: str = "output") -> None:
        """Feed the paired metrics comparing ``pairs`` ("output" or "cycle", see specs/paired.py)."""
        for spec, metric in zip(self.specs, self.metrics):
            if self.is_paired(spec) and getattr(spec, "pairs", "output") == pairs:
                spec.update_pairs(metric, generated.to(self.device), originals.to(self.device))

    def add_generator(self, model: Any, seed: int) -> None:
        """Metrics of a generator itself (``ppl``): they sample its latent space with their own seeded generator."""
        for spec, metric in zip(self.specs, self.metrics):
            if getattr(spec, "needs_generator", False):
                spec.update_generator(metric, model, torch.Generator().manual_seed(seed))

    def compute(self) -> dict[str, float]:
        """``{"<metric>/<extractor>": value}`` for the requested metrics (and their ``_std`` companions)."""
        results: dict[str, float] = {}
        self.curves = {}
        for spec, metric in zip(self.specs, self.metrics):
            values = spec.compute(metric)
            wanted = {name for name in self.requested if METRICS.get(name) is type(spec)}
            umbrella = bool(wanted - {key.removesuffix("_std") for key in values})  # "prdc", "memorization": all values
            # A metric with a network of its own (lpips, ppl) names that network instead of the extractor.
            source = spec.feature_name(self.extractor) if hasattr(spec, "feature_name") else self.extractor.name
            for key, value in values.items():
                if umbrella or key.removesuffix("_std") in wanted:
                    results[f"{key}/{source}"] = float(value)
            for name, curve in (getattr(spec, "curves", None) or {}).items():
                self.curves[f"{name}/{source}"] = curve
        return dict(sorted(results.items()))


def shard(outputs: dict[str, Tensor], rank: int, world_size: int) -> dict[str, Tensor]:
    """This process's share of a set of outputs (every ``world_size``-th row starting at ``rank``)."""
    return {k: v[rank::world_size] for k, v in outputs.items()}


def batched(outputs: dict[str, Tensor], batch_size: int) -> Iterator[dict[str, Tensor]]:
    total = len(next(iter(outputs.values())))
    for start in range(0, total, batch_size):
        yield {k: v[start : start + batch_size] for k, v in outputs.items()}


def batches_fingerprint(batches: Iterable[Any]) -> str:
    """A content hash of every batch a reference set yields (images, (images, labels) or a dict): dtype, shape and bytes
    of each tensor, in order. For callers that know only how to iterate their data; a first pass without the
    feature network. :func:`gen_research.evaluation.sources.dataset_fingerprint` does the same from a dataset,
    cheaper for files (their bytes, not decoded images)."""
    digest = hashlib.sha256(b"batches\n")
    for batch in batches:
        tensors = [batch[k] for k in sorted(batch)] if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else [batch]
        for tensor in tensors:
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}|{list(tensor.shape)}\n".encode())
            if tensor.numel():
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def reference_outputs(
    evaluator: Evaluator,
    batches: Callable[[], Iterable[Tensor]],
    key_parts: dict[str, Any],
    cache: Any | None,
    progress: Callable[[Iterable[Tensor]], Iterable[Tensor]] = lambda it: it,
    fingerprint: str | None = None,
) -> dict[str, Tensor]:
    """Extractor outputs of a reference image set, from the cache when its key matches, else computed and stored.

    ``batches`` yields images, or (images, labels) when class-conditional metrics need the labels, or dicts
    ``{"images", "labels" (optional), "conditions"}`` when conditional metrics need each image's source image (a
    translator's paired data): the sources' features are kept as ``condition_features``.
    ``key_parts`` names the data (dataset, split, number of images, preprocessing); the extractor's own
    ``cache_key()`` and a fingerprint of the *whole* set are added here: ``fingerprint`` when the caller has one
    (``sources.dataset_fingerprint``), else one hashing pass over ``batches()`` before the lookup. Without a
    cache nothing is fingerprinted.
    """
    iterator = iter(batches())
    first = next(iterator, None)
    if first is None:
        raise GenResearchError(f"the reference set {key_parts.get('dataset', '')!r} has no images")
    parts: dict[str, str] = {}
    if cache is not None:
        with_labels = "labels" in first if isinstance(first, dict) else isinstance(first, (tuple, list))
        parts = {**{k: str(v) for k, v in key_parts.items()}, **evaluator.extractor.cache_key(),
                 "fingerprint": fingerprint or batches_fingerprint(batches()), "labels": str(with_labels)}
        if isinstance(first, dict):  # (only then: the keys of existing entries stay as they were)
            parts["conditions"] = "source"
        cached = cache.load(parts)
        if cached is not None:
            return cached

    def extract(batch: Tensor | tuple[Tensor, Tensor] | dict[str, Tensor]) -> dict[str, Tensor]:
        if isinstance(batch, dict):  # images with their sources (and labels)
            outputs = {**evaluator.extract(batch["images"]), "condition_features": evaluator.extract(batch["conditions"])["features"]}
            return {**outputs, "labels": batch["labels"].long()} if "labels" in batch else outputs
        if isinstance(batch, (tuple, list)):  # (images, labels): keep the labels beside the features
            return {**evaluator.extract(batch[0]), "labels": batch[1].long()}
        return evaluator.extract(batch)

    chunks = [extract(first)] + [extract(batch) for batch in progress(iterator)]
    outputs = {k: torch.cat([c[k].cpu() for c in chunks]) for k in chunks[0]}
    if cache is not None:
        cache.save(parts, outputs)
    return outputs
