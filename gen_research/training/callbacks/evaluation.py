"""Metrics during training: samples with the weights used for validation (EMA when on), one feature pass."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback

from gen_research.assets import resolve_asset
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.evaluator import Evaluator, batched, reference_outputs, shard
from gen_research.evaluation.sources import dataset_fingerprint, generated_batches, image_batches, reconstructed_batches
from gen_research.registry import CALLBACKS, FEATURES


def _data_key(datamodule: Any) -> str:
    """The data module's class and plain settings: part of the reference-statistics cache key."""
    settings = {k: v for k, v in sorted(vars(datamodule).items()) if not k.startswith("_") and isinstance(v, (int, float, str, bool, tuple, type(None)))}
    return f"{type(datamodule).__module__}.{type(datamodule).__qualname__}{settings}"


@CALLBACKS.register("evaluation", "FID/KID/precision/recall/... during training, logged as <metric>/<extractor> (can be the checkpoint monitor)")
class EvaluationCallback(Callback):
    """Every ``every_n_epochs`` validation epochs (or ``every_n_steps`` optimizer steps, checked at validation
    time: combine with ``trainer.val_check_interval``), generates ``num_samples`` images and evaluates them
    against the data module's ``split``.

    It runs inside validation (on its first batch), when an EMA callback has swapped its weights in. Under
    DDP each process generates its share and torchmetrics gathers the states; reference outputs are cached.
    The samples are the same set whatever the number of processes (see :meth:`_rank_samples`), so a metric
    under DDP equals the single-process one. Models without a prior (ae, dae) are evaluated on their
    reconstructions of the split.
    """

    def __init__(
        self,
        metrics: str = "fid,kid,precision,recall",
        features: str = "pixels",
        feature_weights: str | None = None,
        feature_resize: int | None = None,
        num_samples: int = 1000,
        num_reference: int | None = None,
        split: Literal["train", "val", "test"] = "val",
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        batch_size: int = 250,
        seed: int = 0,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        nearest_k: int = 5,
        use_cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.features = features
        self.feature_weights = resolve_asset(feature_weights)  # package://NAME: a file shipped in gen_research/assets
        self.feature_resize = feature_resize
        self.num_samples = num_samples
        self.num_reference = num_reference
        self.split = split
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.seed = seed
        self.options = EvalOptions(kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, nearest_k=nearest_k, seed=seed)
        self.use_cache = use_cache
        self.cache_dir = cache_dir
        self._extractor = None
        self._reals: dict[str, torch.Tensor] | None = None
        self._last_step = -1
        self.history: list[dict[str, float]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Every problem of this evaluation, reported before the first training step (not after an epoch):
        the extractor loads (weights found, image shape fits), each metric can be built and fed by this model
        and data, and the sets are large enough for every metric."""
        if stage not in ("fit", "validate"):
            return
        with torch.random.fork_rng(devices=_cuda_devices(pl_module)):  # building the extractor (random init, then weights) leaves the training RNG alone
            self._check_setup(trainer, pl_module)

    def _check_setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from gen_research.errors import GenResearchError
        from gen_research.evaluation.set_sizes import check_set_sizes
        from gen_research.evaluation.sources import samples_by_class

        for name in ("num_samples", "batch_size", "every_n_epochs"):
            if getattr(self, name) < 1:
                raise GenResearchError(f"evaluation callback: {name}={getattr(self, name)} must be at least 1")
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "image_shape"):
            raise GenResearchError("the evaluation callback needs one of gen_research's data modules (data: in the experiment)")
        self._load_extractor(datamodule)  # loads the weights now: a missing or wrong file fails here
        self.options.num_classes = getattr(datamodule, "num_classes", None)
        evaluator = Evaluator(self._extractor, self.metrics, self.options, device="cpu")  # builds (and so checks) each metric
        reference_set = getattr(datamodule, f"{self.split}_set", None)
        if reference_set is None or not len(reference_set):
            raise GenResearchError(f"the evaluation callback's split {self.split!r} has no images in this data module; set split to train, val or test")
        has_prior = getattr(pl_module, "has_prior", False)
        if evaluator.needs_labels and has_prior and not samples_by_class(pl_module):
            raise GenResearchError(f"class-conditional metrics ({self.metrics}) need a model that samples given classes; {type(pl_module).__name__} does not")
        if (evaluator.needs_pairs or not has_prior) and not hasattr(pl_module, "reconstruct"):
            raise GenResearchError(f"{type(pl_module).__name__} neither samples nor reconstructs images; the evaluation callback has nothing to evaluate")
        if evaluator.needs_texts:
            raise GenResearchError("clip_score needs a caption per image: evaluate folders with `evaluate --captions`, not during training")
        num_reference = min(self.num_reference or len(reference_set), len(reference_set))
        check_set_sizes(evaluator.requested, self.options, num_reference, self.num_samples if has_prior else num_reference,
                        f"the {self.split} split (num_reference)", "num_samples")

    def _load_extractor(self, datamodule: Any) -> None:
        if self._extractor is None:
            self._extractor = FEATURES.get(self.features)(weights=self.feature_weights, resize=self.feature_resize,
                                                          image_shape=tuple(datamodule.image_shape))

    def _due(self, trainer: pl.Trainer) -> bool:
        if self.every_n_steps:
            return trainer.global_step - max(self._last_step, 0) >= self.every_n_steps or self._last_step < 0
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking or not self._due(trainer):
            return
        # Evaluation must not move the global (training, checkpointed) random stream: its first run builds the
        # reference set through DataLoaders whose iterators draw a seed from it, so a resumed run (which builds it
        # at another epoch) would continue training on another stream.
        with torch.random.fork_rng(devices=_cuda_devices(pl_module)):
            results = self.evaluate(trainer, pl_module)
        self._last_step = trainer.global_step
        self.history.append({"step": trainer.global_step, **results})
        for key, value in results.items():
            # Every process computed the same gathered value: no further reduction.
            pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=False)

    def _rank_samples(self, pl_module: pl.LightningModule, rank: int, world: int, with_labels: bool) -> Any:
        """This process's samples of a set that does not depend on the number of processes.

        The ``num_samples`` samples are cut into chunks of ``batch_size``; chunk k is drawn with its own generator
        (seed ``seed + 7919 k``, classes from k * batch_size on) and process r draws chunks r, r + world, ...
        Distinct ranks therefore never draw the same noise, and 1 or N processes generate the same images, for any
        N up to the number of chunks. With more processes than chunks the chunks shrink so that every process
        draws some (an idle process would leave torchmetrics an empty state to gather); the set then differs.
        """
        size = self.batch_size
        if -(-self.num_samples // size) < world:
            size = max(1, -(-self.num_samples // world))
        num_chunks = -(-self.num_samples // size)
        for chunk in range(rank, num_chunks, world):
            first = chunk * size
            count = min(size, self.num_samples - first)
            yield from generated_batches(pl_module, count, size, seed=self.seed + 7919 * chunk,
                                         with_labels=with_labels, first_label=first)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        self._load_extractor(trainer.datamodule)
        datamodule = trainer.datamodule
        self.options.num_classes = getattr(datamodule, "num_classes", None)
        evaluator = Evaluator(self._extractor, self.metrics, self.options, device=pl_module.device)
        with_labels = evaluator.needs_labels
        reference_set = getattr(datamodule, f"{self.split}_set")
        num_reference = min(self.num_reference or len(reference_set), len(reference_set))
        rank, world = trainer.global_rank, trainer.world_size
        if evaluator.needs_reals:
            if self._reals is None:
                cache = None
                if self.use_cache:
                    from gen_research.evaluation.cache import ReferenceCache

                    cache = ReferenceCache(self.cache_dir)
                key = {"dataset": _data_key(datamodule), "split": self.split, "num_images": num_reference, "preprocessing": "datamodule"}
                # Every reference image is fingerprinted (not the first batch): an edited image means new statistics.
                fingerprint = dataset_fingerprint(reference_set, num_reference) if cache is not None else None
                self._reals = reference_outputs(evaluator, lambda: image_batches(reference_set, self.batch_size, num_reference, with_labels), key, cache,
                                                fingerprint=fingerprint)
            for chunk in batched(shard(self._reals, rank, world), 1000):
                evaluator.add_outputs(chunk, "real")
        if getattr(pl_module, "has_prior", False):
            fakes = self._rank_samples(pl_module, rank, world, with_labels)
        else:
            local = torch.utils.data.Subset(reference_set, range(rank, num_reference, world))
            fakes = (recon for recon, _ in reconstructed_batches(pl_module, image_batches(local, self.batch_size)))
        if evaluator.needs_raw_reals:  # cas tests on the real images themselves
            local = torch.utils.data.Subset(reference_set, range(rank, num_reference, world))
            for images, labels in image_batches(local, self.batch_size, with_labels=True):
                evaluator.add_raw_images(images, "real", labels if with_labels else None)
        if evaluator.needs_fakes:
            for batch in fakes:
                images, labels = batch if with_labels else (batch, None)
                evaluator.add_images(images, "fake", labels)
        if evaluator.needs_train:
            train_set = datamodule.train_set
            local_train = torch.utils.data.Subset(train_set, range(rank, len(train_set), world))
            for images in image_batches(local_train, self.batch_size):
                evaluator.add_images(images, "train")
        if evaluator.needs_generator:
            evaluator.add_generator(pl_module, self.seed)
        if evaluator.needs_pairs and hasattr(pl_module, "reconstruct"):
            local = torch.utils.data.Subset(reference_set, range(rank, num_reference, world))
            for recon, original in reconstructed_batches(pl_module, image_batches(local, self.batch_size)):
                evaluator.add_pairs(recon, original)
        return evaluator.compute()


def _cuda_devices(module: pl.LightningModule) -> list[int]:
    return [module.device.index or 0] if module.device.type == "cuda" else []
