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
``Translates``           ``translate`` of each reference item's source     (translation, the item's ``target``:
                         into its ``target_domain`` (when the data name    paired data only); cycle_l1:
                         one)                                              (translated back, source)
``Reconstructs`` only    reconstructions of the reference images           (reconstruction, original)
=======================  ===============================================  ==================================

Real images are the reference items' ``image`` field (for paired data: the target; for unpaired and multi-domain
data: a real image of the domain translations go into). Generated sets are the same whatever the number of
processes: samples are cut into chunks of ``batch_size``, chunk k drawn with seed ``seed + 7919 k`` (classes from
``k * batch_size`` on), and process r draws chunks r, r + world, ...

Labels (class metrics: accuracy, intra-FID, cas) are the batch field the extractor's logits predict
(``label_field``, gen_research/data/batch.py): ``label``, the class (of a translation: its source's class, which it
should keep), or ``domain`` (a domain classifier): a translation's is the ``target_domain`` it was asked for, a real
image's the domain of ``image`` (the item's ``target_domain`` when the item has a ``source``, else its ``domain``).

Conditions (cfid: the distribution of images given their condition). A class-conditional generator's condition is
its class: the labels above. A translator's is each item's ``source`` image, on paired data only (items with a
``source`` and its ``target``): with ``with_conditions`` the reference batches are dicts ``{"images": target,
"conditions": source[, "labels"]}`` (their features are cached with the reals'), and the generated images are fed
with the sources they were translated from.
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
    label_field: str = "label"
    with_conditions: bool = False  # a translator's source images beside its reals and translations (cfid)

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
        # A translator's conditional metrics (cfid) take its source images as the condition, not classes.
        class_metrics = [m for m in evaluator.label_metrics if not (self.mode == "translations" and m in self._condition_metrics(evaluator))]
        if self._condition_metrics(evaluator):
            self._check_conditions(evaluator)
        if class_metrics and self.mode == "translations" and self.label_field == "label" and not evaluator.options.num_classes:
            # Folder data without classes labels every item 0: "accuracy" would be the share of outputs read as class 0.
            raise GenResearchError(f"class metrics ({', '.join(class_metrics)}) of {name}'s translations need data with classes, and "
                                   "this data has none; evaluate the domain with a domain classifier (label_field: domain) instead")
        if evaluator.needs_labels and self.mode == "samples" and self.label_field != "label":
            raise GenResearchError(f"the extractor predicts the {self.label_field!r} field, which only a translator's data names; "
                                   f"{name} samples classes: use a class classifier")
        if evaluator.needs_cycle_pairs and not (self.mode == "translations" and self.model.target_domains):
            raise GenResearchError(f"cycle_l1 translates images there and back: it needs a translator between named domains; {name} is not one")
        if evaluator.needs_pairs and not (can(self.model, Reconstructs) or can(self.model, Translates)):
            raise GenResearchError(f"ssim/psnr/lpips compare pairs: they need a model that reconstructs or translates images; {name} does neither")
        if evaluator.needs_texts:
            raise GenResearchError("clip_score needs a caption per image: evaluate folders with `evaluate --captions`")

    @staticmethod
    def _condition_metrics(evaluator: Any) -> list[str]:
        return list(getattr(evaluator, "condition_metrics", []) or [])

    @property
    def _sources_are_conditions(self) -> bool:
        return self.with_conditions and self.mode == "translations"

    def _check_conditions(self, evaluator: Any) -> None:
        """What conditional metrics (cfid) need: classes of a class-conditional generator, or paired sources of a translator."""
        from gen_research.data.batch import as_fields

        wanting, name = ", ".join(self._condition_metrics(evaluator)), type(self.model).__name__
        if self.mode == "reconstructions":
            raise GenResearchError(f"{wanting} compares images given their condition: a class-conditional generator's class or a "
                                   f"translator's source image; {name} only reconstructs")
        if self.mode != "translations":
            return  # samples: the classes (the labels path) are the condition, checked with the class metrics
        fields = as_fields(self.reference_set[0]) if len(self.reference_set) else {}
        if "source" not in fields or "target" not in fields:
            raise GenResearchError(f"{wanting} of a translator compares (source, target) with (source, translation) pairs: it needs "
                                   "paired data (items with a source and its target); these items have no paired target")
        if not self.with_conditions:  # a caller's omission, not the user's
            raise GenResearchError(f"{wanting}: this Feeder was built without with_conditions=True, so its reals carry no sources")

    # ---- what the metrics are fed ------------------------------------------------------------------
    def reference_batches(self, with_labels: bool | None = None) -> Iterator[Any]:
        """The reference images in order (the metric's "real" set): images, or (images, labels) when labels are
        wanted and the items say what each image's label is (unpaired items name only their source's class: their
        images come without labels, and a metric needing them says so in one line). With ``with_conditions`` for a
        translator: dicts ``{"images", "conditions" (the items' sources), "labels" (when wanted)}``."""
        wanted = self.with_labels if with_labels is None else with_labels
        if self.label_field == "label" and not self.mode == "translations":
            return image_batches(self.reference_set, self.batch_size, self.num_reference, wanted)
        fields = field_batches(self.reference_set, self.batch_size, self.num_reference)
        if self._sources_are_conditions:
            return (self._conditioned_reals(batch, wanted) for batch in fields)
        return ((batch["image"], self.real_labels(batch)) if wanted and self.knows_real_labels(batch) else batch["image"] for batch in fields)

    def _conditioned_reals(self, fields: dict[str, Any], with_labels: bool) -> dict[str, Tensor]:
        if "target" not in fields:
            raise GenResearchError("cfid of a translator needs paired data (items with a source and its target); these items have no target")
        batch = {"images": fields["image"], "conditions": self._field(fields, "source")}
        return {**batch, "labels": self.real_labels(fields)} if with_labels else batch

    def _field(self, fields: dict[str, Any], name: str) -> Tensor:
        if name not in fields:
            raise GenResearchError(f"the reference items have no {name!r} field (they have {', '.join(sorted(fields))}); "
                                   f"evaluate on data that provides it (gen_research/data/batch.py)")
        return fields[name]

    def knows_real_labels(self, fields: dict[str, Any]) -> bool:
        """Whether the items name the label of their ``image``: not so for classes of unpaired items (source, no target)."""
        return self.label_field == "domain" or "source" not in fields or "target" in fields

    def real_labels(self, fields: dict[str, Any]) -> Tensor:
        """The label (``label_field``) of each item's ``image``: for ``domain``, the domain of the image itself."""
        if not self.knows_real_labels(fields):
            raise GenResearchError("unpaired reference items name the class of their source only, not of their image; "
                                   "class metrics of real images (cas, intra_fid) do not apply: use accuracy (class preservation)")
        if self.label_field == "domain" and "source" in fields:
            return self._field(fields, "target_domain")
        return self._field(fields, self.label_field)

    def fake_labels(self, fields: dict[str, Any]) -> Tensor:
        """The label (``label_field``) each translation or reconstruction should have: the requested domain, or the
        source's class."""
        return self._field(fields, "target_domain" if self.label_field == "domain" else self.label_field)

    def _local_items(self, rank: int, world: int) -> Iterator[dict[str, Any]]:
        """This process's reference items (every world-th from rank), as dict batches of named fields."""
        return field_batches(Subset(self.reference_set, range(rank, self.num_reference, world)), self.batch_size)

    def fakes(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor | None]]:
        """This process's (generated images, labels or None) batches."""
        for images, labels, _ in self.conditioned_fakes(rank, world):
            yield images, labels

    def conditioned_fakes(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor | None, Tensor | None]]:
        """This process's (generated images, labels or None, source images or None) batches: the sources a translator
        translated, with ``with_conditions``."""
        if self.mode == "samples":
            for images, labels in self._samples(rank, world):
                yield images, labels, None
            return
        device = _device_of(self.model)
        with torch.no_grad():
            for fields in self._local_items(rank, world):
                labels = self.fake_labels(fields) if self.with_labels else None
                sources = self._field(fields, "source").to(device) if self._sources_are_conditions else None
                yield self._generate_from(fields, device), labels, sources

    def pairs(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """(generated, original) pairs: translations against targets, or reconstructions against inputs."""
        device = _device_of(self.model)
        with torch.no_grad():
            for fields in self._local_items(rank, world):
                if self.mode == "translations":
                    if "target" not in fields:  # unpaired data: its image is some real image, not this source's truth
                        raise GenResearchError("ssim/psnr/lpips compare a translation with its paired ground truth, and these "
                                               "reference items have no target (unpaired data); use fid/kid, accuracy or cycle_l1")
                    yield self._generate_from(fields, device), fields["target"].to(device)
                else:
                    images = fields["image"].to(device)
                    yield self.model.reconstruct(images).float().clamp(-1, 1), images

    def cycle_pairs(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """(source translated into its target domain and back into its own, source): cycle_l1."""
        device = _device_of(self.model)
        with torch.no_grad():
            for fields in self._local_items(rank, world):
                source = fields.get("source", fields["image"]).to(device)
                back = self.model.translate(self._generate_from(fields, device), self._field(fields, "domain").to(device))
                yield back.float().clamp(-1, 1), source

    def raw_reals(self, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The reference images themselves, for metrics that test on them (cas)."""
        for fields in self._local_items(rank, world):
            yield fields["image"], self.real_labels(fields) if self.with_labels else None

    def _generate_from(self, fields: dict[str, Any], device: torch.device) -> Tensor:
        if self.mode == "translations":
            source = fields.get("source", fields["image"]).to(device)
            target = fields.get("target_domain")
            if target is None and self.model.target_domains:
                raise GenResearchError(f"{type(self.model).__name__} translates into named domains, and these reference items name no "
                                       "target_domain; evaluate on its multi-domain or unpaired data (gen_research/data/batch.py)")
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
        if self._condition_metrics(evaluator):
            self._check_conditions(evaluator)
        if evaluator.needs_fakes:
            for images, labels, sources in progress(self.conditioned_fakes(rank, world)):
                evaluator.add_images(images, "fake", labels if self.with_labels else None, conditions=sources)
        if evaluator.needs_generator:
            evaluator.add_generator(self.model, self.seed)
        if evaluator.needs_pairs:
            for generated, original in self.pairs(rank, world):
                evaluator.add_pairs(generated, original)
        if evaluator.needs_cycle_pairs:
            for back, source in self.cycle_pairs(rank, world):
                evaluator.add_pairs(back, source, pairs="cycle")


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


__all__ = ["CHUNK_SEED_STRIDE", "Feeder"]
