"""Metrics during training: samples with the weights used for validation (EMA when on), one feature pass."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback

from gen_research.assets import resolve_asset
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.evaluator import Evaluator, batched, reference_outputs, shard
from gen_research.evaluation.feeder import Feeder
from gen_research.evaluation.sources import dataset_fingerprint, image_batches, reference_image_shape
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
    What is generated is decided by :class:`~gen_research.evaluation.feeder.Feeder` (as for ``evaluate``): samples
    of a generator (the same set whatever the number of processes, so a metric under DDP equals the
    single-process one), translations of a translator, reconstructions of an autoencoder that cannot sample.
    """

    def __init__(
        self,
        metrics: str = "fid,kid,precision,recall",
        features: str = "pixels",
        feature_weights: str | None = None,
        feature_resize: int | None = None,
        feature_resize_mode: str | None = None,
        num_samples: int = 1000,
        num_reference: int | None = None,
        split: Literal["train", "val", "test"] = "val",
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        batch_size: int = 250,
        seed: int = 0,
        kid_subset_size: int = EvalOptions.kid_subset_size,  # the metric defaults live in one place (EvalOptions)
        kid_subsets: int = EvalOptions.kid_subsets,
        nearest_k: int = EvalOptions.nearest_k,
        use_cache: bool = True,
        cache_dir: str | None = None,
        sample_options: dict[str, Any] | None = None,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        """``sample_options``: the family's declared sampling options the samples are drawn with (e.g.
        ``{truncation_psi: 0.7}``), checked against the model's declaration before training. ``metric_options``:
        any other field of :class:`~gen_research.evaluation.base.EvalOptions` (``{alpha_steps: 20, critic_epochs: 50}``).
        ``feature_resize_mode``: clean-fid's resize mode of the extractor (clean, legacy_tensorflow, legacy_pytorch;
        default: the extractor's own)."""
        self.metrics = metrics
        self.features = features
        self.feature_weights = resolve_asset(feature_weights)  # package://NAME: a file shipped in gen_research/assets
        self.feature_resize = feature_resize
        self.feature_resize_mode = feature_resize_mode
        self.num_samples = num_samples
        self.num_reference = num_reference
        self.split = split
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.seed = seed
        self.options = _eval_options(metric_options, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, nearest_k=nearest_k, seed=seed)
        self.use_cache = use_cache
        self.cache_dir = cache_dir
        self.sample_options = dict(sample_options or {})
        self._extractor = None
        self._reals: dict[str, dict[str, torch.Tensor]] | None = None  # role (real, train) -> reference outputs
        self._last_step = -1
        self.history: list[dict[str, float]] = []
        self._fingerprints: dict[str, str | None] = {}
        self.provenance: dict[str, Any] | None = None  # what the logged numbers were measured with (logged once as hyperparameters)
        self._first_evaluation: tuple[Evaluator, Feeder] | None = None  # kept until its provenance is recorded

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
        from gen_research.models.contract import check_sampling_options

        self.sample_options = check_sampling_options(pl_module, self.sample_options)  # declared by the family, checked by it
        feeder = self._feeder(pl_module, reference_set, evaluator.needs_labels, evaluator.needs_conditions)
        feeder.check(evaluator)
        check_set_sizes(evaluator.requested, self.options, feeder.num_reference, feeder.num_generated,
                        f"the {self.split} split (num_reference)", "num_samples")

    def _feeder(self, pl_module: pl.LightningModule, reference_set: Any, with_labels: bool, with_conditions: bool = False) -> Feeder:
        num_reference = min(self.num_reference or len(reference_set), len(reference_set))
        return Feeder(pl_module, reference_set, num_reference, self.num_samples, self.batch_size, self.seed, with_labels,
                      sample_options=self.sample_options, label_field=self._extractor.label_field, with_conditions=with_conditions)

    def _load_extractor(self, datamodule: Any) -> None:
        if self._extractor is None:
            reference_set = getattr(datamodule, f"{self.split}_set", None)  # its images may differ from training's (B -> A)
            shape = reference_image_shape(reference_set) if reference_set is not None and len(reference_set) else tuple(datamodule.image_shape)
            self._extractor = FEATURES.get(self.features)(weights=self.feature_weights, resize=self.feature_resize,
                                                          resize_mode=self.feature_resize_mode, image_shape=shape)

    def produces(self, key: str) -> bool:
        """Whether ``key`` (e.g. ``fid/classifier-mnist5k``) is one of the numbers this callback logs when it is due:
        the checkpoint callback then waits for it instead of failing at the validations in between."""
        from gen_research.evaluation.evaluator import parse_metric_names

        metric, _, extractor = key.partition("/")
        names = parse_metric_names(self.metrics)
        same_extractor = self._extractor is not None and extractor == self._extractor.name  # a misspelt extractor still fails
        return same_extractor and any(metric.removesuffix("_std").startswith(name) for name in names)

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
        # (The provenance's fingerprint may read the reference set through a DataLoader too: inside the same fork.)
        with torch.random.fork_rng(devices=_cuda_devices(pl_module)):
            results = self.evaluate(trainer, pl_module)
            first = self.provenance is None and self._first_evaluation is not None
            if first:  # from the first evaluation's own evaluator and feeder
                self.provenance = self._provenance(trainer, pl_module, *self._first_evaluation)
                self._first_evaluation = None
        self._last_step = trainer.global_step
        self.history.append({"step": trainer.global_step, **results})
        if first:
            for logger in trainer.loggers:  # W&B: the run's config; CSV: hparams.yaml (rank zero only, Lightning's loggers)
                logger.log_hyperparams({"evaluation_provenance": self.provenance})
        for key, value in results.items():
            # Every process computed the same gathered value: no further reduction.
            pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=False)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        self._load_extractor(trainer.datamodule)
        datamodule = trainer.datamodule
        self.options.num_classes = getattr(datamodule, "num_classes", None)
        evaluator = Evaluator(self._extractor, self.metrics, self.options, device=pl_module.device)
        reference_set = getattr(datamodule, f"{self.split}_set")
        feeder = self._feeder(pl_module, reference_set, evaluator.needs_labels, evaluator.needs_conditions)
        rank, world = trainer.global_rank, trainer.world_size
        if self._reals is None and (evaluator.needs_reals or evaluator.needs_train):
            self._reals = self._reference_outputs(evaluator, datamodule, feeder)
        for role, outputs in (self._reals or {}).items():
            for chunk in batched(shard(outputs, rank, world), 1000):
                evaluator.add_outputs(chunk, role)
        feeder.feed(evaluator, rank, world)
        if self.provenance is None:
            self._first_evaluation = (evaluator, feeder)
        return evaluator.compute()

    def _provenance(self, trainer: pl.Trainer, pl_module: pl.LightningModule, evaluator: Evaluator, feeder: Feeder) -> dict[str, Any]:
        """What this callback's numbers are measured with (gen_research.evaluation.provenance), from the evaluation's own
        evaluator and feeder: the same record as ``evaluate --json`` writes, so a run's logged FID can be checked
        against a later evaluation."""
        from gen_research.evaluation.provenance import build_provenance
        from gen_research.models.contract import ModelFamily

        datamodule = trainer.datamodule
        reference = {"dataset": _data_key(datamodule), "split": self.split, "num_images": feeder.num_reference, "preprocessing": "datamodule",
                     "fingerprint": self._fingerprints.get("real") or dataset_fingerprint(feeder.reference_set, feeder.num_reference)}
        defaults = pl_module.sampling_defaults() if isinstance(pl_module, ModelFamily) else {}
        sampling = {"mode": feeder.mode, **{k: v for k, v in defaults.items() if v is not None}, **self.sample_options}
        train = None
        if evaluator.needs_train:
            train = {"dataset": _data_key(datamodule), "split": "train", "num_images": len(datamodule.train_set),
                     "fingerprint": self._fingerprints.get("train") or dataset_fingerprint(datamodule.train_set)}
        return build_provenance(self._extractor, options=self.options, metrics=evaluator.requested, num_generated=feeder.num_generated,
                                num_reference=feeder.num_reference if evaluator.needs_reals else None, reference=reference,
                                sampling=sampling, num_train=train["num_images"] if train else None, train_reference=train,
                                subject={"run": str(trainer.default_root_dir), "first_evaluated_step": trainer.global_step})

    def _reference_outputs(self, evaluator: Evaluator, datamodule: Any, feeder: Feeder) -> dict[str, dict[str, torch.Tensor]]:
        """Extractor outputs of the reference split (and the training set for memorization metrics), cached on disk."""
        cache = None
        if self.use_cache:
            from gen_research.evaluation.cache import ReferenceCache

            cache = ReferenceCache(self.cache_dir)
        references = {}
        if evaluator.needs_reals:
            key = {"dataset": _data_key(datamodule), "split": self.split, "num_images": feeder.num_reference, "preprocessing": "datamodule"}
            # Every reference image is fingerprinted (not the first batch): an edited image means new statistics.
            fingerprint = dataset_fingerprint(feeder.reference_set, feeder.num_reference) if cache is not None else None
            self._fingerprints["real"] = fingerprint
            references["real"] = reference_outputs(evaluator, feeder.reference_batches, key, cache, fingerprint=fingerprint)
        if evaluator.needs_train:
            train_set = datamodule.train_set
            key = {"dataset": _data_key(datamodule), "split": "train", "num_images": len(train_set), "preprocessing": "datamodule"}
            fingerprint = dataset_fingerprint(train_set, len(train_set)) if cache is not None else None
            self._fingerprints["train"] = fingerprint
            references["train"] = reference_outputs(evaluator, lambda: image_batches(train_set, self.batch_size), key, cache, fingerprint=fingerprint)
        return references


def _eval_options(metric_options: dict[str, Any] | None, **given: Any) -> EvalOptions:
    """EvalOptions from the callback's own arguments and ``metric_options`` (any other EvalOptions field, checked)."""
    import dataclasses

    from gen_research.errors import GenResearchError

    extra = dict(metric_options or {})
    fields = {f.name for f in dataclasses.fields(EvalOptions)}
    unknown = sorted(set(extra) - fields)
    if unknown:
        raise GenResearchError(f"evaluation callback: metric_options {unknown} unknown; choose from {', '.join(sorted(fields - set(given)))}")
    clash = sorted(set(extra) & set(given))
    if clash:
        raise GenResearchError(f"evaluation callback: give {', '.join(clash)} as the callback's own argument(s), not in metric_options")
    return EvalOptions(**given, **extra)


def _cuda_devices(module: pl.LightningModule) -> list[int]:
    return [module.device.index or 0] if module.device.type == "cuda" else []
