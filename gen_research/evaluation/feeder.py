"""The evaluation feeder: which images are "fake" and which "real" for a model and its data, in one place.

The ``evaluate`` command, the ``evaluation`` callback and the sampler grid all evaluate a model against a
reference split; they differ only in where the model comes from, how reference features are cached, and (the
callback) how the work is split over processes. What they feed the metrics is decided here, through the model
contract (gen_research/models/contract.py) only:

=======================  ===============================================  ==================================
the model                generated ("fake") images                        pairs (ssim, psnr, lpips)
=======================  ===============================================  ==================================
``Generates``            ``sample`` from chunk-seeded generators           its reconstructions, if it also
                         (classes in turn when a metric needs labels)      ``Reconstructs`` (vae)
``Translates``           ``translate`` of each reference item's source     (translation, the item's target)
``Reconstructs`` only    reconstructions of the reference images           (reconstruction, original)
=======================  ===============================================  ==================================

Real images are the reference items' ``image`` field (for paired data: the target). Generated sets are the same
whatever the number of processes: samples are cut into chunks of ``batch_size``, chunk k drawn with seed
``seed + 7919 k`` (classes from ``k * batch_size`` on), and process r draws chunks r, r + world, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from gen_research.errors import GenResearchError
from gen_research.evaluation.sources import field_batches, image_batches
from gen_research.models.contract import Generates, Reconstructs, Translates, can, conditioning_classes

CHUNK_SEED_STRIDE = 7919  # a prime: chunk seeds never collide with a neighbouring run's base seed


@dataclass
class Feeder:
    """Generated images, pairs and raw reference images of ``model`` against the first ``num_reference`` items of
    ``reference_set``. ``num_samples`` is how many images a generator draws (translators and reconstructors
    produce one per reference item)."""

    model: Any
    reference_set: Dataset
    num_reference: int
    num_samples: int
    batch_size: int
    seed: int = 0
    with_labels: bool = False
    sample_options: dict[str, Any] | None = None

    @property
    def mode(self) -> str:
        if can(self.model, Generates):
            return "samples"
        if can(self.model, Translates):
            return "translations"
        if can(self.model, Reconstructs):
            return "reconstructions"
        return "nothing"

    @property
    def num_generated(self) -> int:
        return self.num_samples if self.mode == "samples" else self.num_reference

    def describe(self, split: str) -> str:
        if self.mode == "samples":
            return f"{self.num_samples} samples" + (" (classes in turn)" if self.with_labels else "")
        return f"{self.mode} of {self.num_reference} {split} images"

    def check(self, evaluator: Any) -> None:
        """One line for what this model cannot give the requested metrics, before any image is generated."""
        name = type(self.model).__name__
        if self.mode == "nothing":
            raise GenResearchError(f"{name} neither samples, translates nor reconstructs images; there is nothing to evaluate")
        if evaluator.needs_labels and self.mode == "samples" and not conditioning_classes(self.model):
            wanting = ", ".join(evaluator.label_metrics)
            raise GenResearchError(f"class-conditional metrics ({wanting}) need a model that samples given classes; {name} does not")
        if evaluator.needs_pairs and not (can(self.model, Reconstructs) or can(self.model, Translates)):
            raise GenResearchError(f"ssim/psnr/lpips compare pairs: they need a model that reconstructs or translates images; {name} does neither")
        if evaluator.needs_texts:
            raise GenResearchError("clip_score needs a caption per image: evaluate folders with `evaluate --captions`")

    # ---- what the metrics are fed ------------------------------------------------------------------
    def reference_batches(self, with_labels: bool | None = None) -> Iterator[Any]:
        """The reference images in order (the metric's "real" set): images, or (images, labels)."""
        return image_batches(self.reference_set, self.batch_size, self.num_reference, self.with_labels if with_labels is None else with_labels)

    def _local_items(self, rank: int, world: int) -> Iterator[dict[str, Any]]:
        """This process's reference items (every world-th from rank), as dict batches of named fields."""
        return field_batches(Subset(self.reference_set, range(rank, self.num_reference, world)), self.batch_size)

    def fakes(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor | None]]:
        """This process's (generated images, labels or None) batches."""
        if self.mode == "samples":
            yield from self._samples(rank, world)
            return
        device = _device_of(self.model)
        with torch.no_grad():
            for fields in self._local_items(rank, world):
                labels = fields.get("label") if self.with_labels else None
                yield self._generate_from(fields, device), labels

    def pairs(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """(generated, original) pairs: translations against targets, or reconstructions against inputs."""
        device = _device_of(self.model)
        with torch.no_grad():
            for fields in self._local_items(rank, world):
                if can(self.model, Translates) and not can(self.model, Generates):
                    yield self._generate_from(fields, device), fields.get("target", fields["image"]).to(device)
                else:
                    images = fields["image"].to(device)
                    yield self.model.reconstruct(images).float().clamp(-1, 1), images

    def raw_reals(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The reference images themselves, for metrics that test on them (cas)."""
        for fields in self._local_items(rank, world):
            yield fields["image"], fields.get("label") if self.with_labels else None

    def _generate_from(self, fields: dict[str, Any], device: torch.device) -> Tensor:
        if self.mode == "translations":
            source = fields.get("source", fields["image"]).to(device)
            target = fields.get("domain")
            return self.model.translate(source, target.to(device) if target is not None else None).float().clamp(-1, 1)
        return self.model.reconstruct(fields["image"].to(device)).float().clamp(-1, 1)

    def _samples(self, rank: int, world: int) -> Iterator[tuple[Tensor, Tensor | None]]:
        size = self.batch_size
        if -(-self.num_samples // size) < world:  # more processes than chunks: smaller chunks, so none is idle
            size = max(1, -(-self.num_samples // world))
        num_chunks = -(-self.num_samples // size)
        classes = conditioning_classes(self.model) if self.with_labels else None
        device = _device_of(self.model)
        with torch.no_grad():
            for chunk in range(rank, num_chunks, world):
                first = chunk * size
                count = min(size, self.num_samples - first)
                generator = torch.Generator(device=device).manual_seed(self.seed + CHUNK_SEED_STRIDE * chunk)
                labels = torch.arange(first, first + count, device=device) % classes if classes else None
                images = self.model.sample(count, labels=labels, generator=generator, **(self.sample_options or {}))
                yield images.float().clamp(-1, 1), labels

    def feed(self, evaluator: Any, rank: int = 0, world: int = 1, progress: Callable[[Any], Any] = lambda it: it) -> None:
        """Everything ``evaluator`` needs besides the reference features (fed by the caller, who caches them)."""
        if evaluator.needs_raw_reals:
            for images, labels in self.raw_reals(rank, world):
                evaluator.add_raw_images(images, "real", labels)
        if evaluator.needs_fakes:
            for images, labels in progress(self.fakes(rank, world)):
                evaluator.add_images(images, "fake", labels if self.with_labels else None)
        if evaluator.needs_generator:
            evaluator.add_generator(self.model, self.seed)
        if evaluator.needs_pairs:
            for generated, original in self.pairs(rank, world):
                evaluator.add_pairs(generated, original)


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


__all__ = ["CHUNK_SEED_STRIDE", "Feeder"]
