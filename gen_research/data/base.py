"""The shared base of every data module: seeded splits, [-1, 1] images, named batch fields, resumable order, seeded
flips and random crops, and how batches are loaded (batched indexing of in-memory sets, optionally on the training
device; worker and pinning defaults)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gen_research.data.batch import IMAGE_FIELDS, collate_fields
from gen_research.data.datasets import split_indices
from gen_research.data.in_memory import DATA_ON_DEVICE_MAX_BYTES, batched_view, stored_bytes
from gen_research.data.resumable_order import ResumableOrder
from gen_research.data.transforms import augment_fields, center_crop_item, flip_seed, output_shape
from gen_research.errors import GenResearchError

SPLITS = ("train", "val", "test")
Splits = dict[str, tuple[Dataset, Tensor]]  # split name -> (dataset, label of each item)


def global_seed() -> int:
    """The seed Lightning's ``seed_everything`` exported (0 if it was not called)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class CenterCropped(Dataset):
    """A dataset whose items' images are centre-cropped to ``size``: what every split serves to whoever reads it
    directly (evaluation, reference features); training batches instead take a seeded random crop of ``dataset``."""

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset = dataset
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return center_crop_item(self.dataset[index], IMAGE_FIELDS, self.size)


#: Most DataLoader worker processes the ``num_workers: null`` default starts for data read per item (files).
MAX_DEFAULT_WORKERS = 4


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_workers(in_memory: bool, device: torch.device) -> int:
    """``num_workers: null``, from the measurements in docs/results.md (data-loading; 2-core AMD EPYC, batch 64):

    - in-memory sets: 0. A batch is one tensor index (0.11 ms for mnist5k); a worker only adds sending every batch
      through a pipe (1 or 2 workers: 8x fewer batches/s).
    - data decoded per item (image files), training on CPU: 0. The workers take cores from the training step's
      threads: the quickstart VAE on 2,000 PNG digits ran 6% slower with 1 worker and 5% slower with 2 than with
      none, although 2 workers alone decode 1.5x faster.
    - data decoded per item, training on CUDA: ``min(4, cpus - 1)``, so decoding overlaps the GPU's work while one
      core stays with the process that drives the GPU (the usual setting; not measured here: no GPU).
    """
    if in_memory or device.type != "cuda":
        return 0
    return max(0, min(MAX_DEFAULT_WORKERS, available_cpus() - 1))


@dataclass(frozen=True)
class Loading:
    """How one loader is built, resolved from the module's options, its dataset and the training device."""

    dataset: Dataset  # the split itself, or a BatchedView of it (batches by one index, maybe on the device)
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    on_device: bool  # the stored tensors were copied to the training device (CUDA)
    batched: bool  # batches are gathered by one index (BatchedView) instead of per-item __getitem__ + collate


def _is_fitting(trainer: Any) -> bool:
    state = getattr(trainer, "state", None)
    return trainer is not None and getattr(state, "fn", None) == "fit"  # TrainerFn is a str enum


class ImageDataModule(LightningDataModule):
    """Base data module: every loader yields dicts ``{"image": float32 [B, C, H, W] in [-1, 1], "label": int64 [B]}``
    (gen_research/data/batch.py); a subclass providing other fields lists them in ``batch_fields``.

    Args:
        batch_size: images per batch (per process under DDP).
        val_fraction: share of the training pool held out for validation (seeded by split_seed).
        split_seed: seed of the train/val(/test) split; the same seed always gives the same split.
        resize: resize the shorter image side to this many pixels.
        center_crop: then crop a centred square of this size.
        random_crop: then crop training images to a random square of this size (seeded, reproducible; pix2pix's
            "resize 286, random crop 256"); validation, test and predict images take the centred square instead.
        random_flip: flip training images horizontally with probability 0.5 (seeded, reproducible).
        holdout_class: leave this class out of train and val (anomaly detection); test keeps it.
        num_workers: DataLoader worker processes; null (default): 0 for in-memory sets (their batches are one tensor
            index) and for any data when training on CPU (workers take the training step's cores), ``min(4, cpus - 1)``
            for data decoded per item (image files) when training on CUDA; see :func:`default_workers`.
        pin_memory: pin batches in page-locked memory (asynchronous host-to-GPU copies); null (default): true exactly
            when the training device is CUDA and the data is not held there already.
        persistent_workers: keep workers alive between epochs (only used when num_workers > 0); null (default): true
            whenever there are workers (no re-spawn, and no re-pickling of the dataset, every epoch).
        data_on_device: hold an in-memory set's tensors on the training device, so that batches are gathered there
            with no host-to-device copy. ``auto`` (default): when training on CUDA, the set is in memory, its stored
            tensors take at most ``DATA_ON_DEVICE_MAX_BYTES`` (512 MiB; every DDP rank holds its own copy) and
            num_workers is 0 or null; ``true``: whatever its size (an error for data read from files, or with
            workers); ``false``: never. On CPU there is nothing to move. The sample order, the DDP share of each
            rank and mid-epoch resume are those of the host path (the same sampler picks the indices).
    """

    #: Name used in error messages; subclasses set their registered name.
    data_name = "data"
    #: The named fields of every batch (gen_research.models.contract.BATCH_FIELDS names them; models declare theirs).
    batch_fields: tuple[str, ...] = ("image", "label")
    #: Random crops and flips: one draw per item for all its image fields (a pair stays aligned). Unpaired data sets
    #: False so each field draws its own (CycleGAN transforms A and B independently).
    joint_geometry: bool = True

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resize: int | None = None,
        center_crop: int | None = None,
        random_flip: bool = False,
        holdout_class: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        random_crop: int | None = None,
        data_on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        self._check_positive("batch_size", batch_size)
        self._check_fraction("val_fraction", val_fraction)
        for name, value in (("resize", resize), ("center_crop", center_crop), ("random_crop", random_crop)):
            if value is not None:
                self._check_positive(name, value)
        if num_workers is not None and num_workers < 0:
            self._fail(f"num_workers must be >= 0, got {num_workers}", "num_workers")
        if data_on_device not in (True, False, "auto"):
            self._fail(f"data_on_device must be auto, true or false, got {data_on_device!r}", "data_on_device")
        if data_on_device is True and num_workers:
            self._fail(f"data_on_device=true gathers batches on the GPU in this process; it cannot run in "
                       f"{num_workers} worker processes: set num_workers to 0", "num_workers")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.resize = resize
        self.center_crop = center_crop
        self.random_crop = random_crop
        self.random_flip = random_flip
        self.holdout_class = holdout_class
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.data_on_device = data_on_device
        #: Draw batches of in-memory sets by one tensor index (BatchedView); False: per item + collate (the old path,
        #: kept for comparisons: benchmarks/perf/data_loading.py).
        self.batched_indexing = True
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._resume: dict[str, int] = {}
        self._image_shape: tuple[int, int, int] | None = None

    # ---- what subclasses provide -------------------------------------------------------------
    def _raw_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a stored image before resize/crop; must not need setup()."""
        raise NotImplementedError

    def _build_splits(self) -> Splits:
        """Load the data and return {"train", "val", "test"} -> (dataset, labels), before holdout."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int | None:
        """Number of label classes, or None when the data has no labels (labels are then 0)."""
        return None

    # ---- static facts, known before setup ----------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images in a batch, after resize and crops."""
        if self._image_shape is None:
            self._image_shape = self.geometry_shape(self._raw_shape())
        return self._image_shape

    def geometry_shape(self, raw_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) that an image of ``raw_shape`` has in a batch: after resize, center_crop and random_crop."""
        channels, height, width = output_shape(raw_shape, self.resize, self.center_crop)
        if self.random_crop is None:
            return channels, height, width
        if self.random_crop > min(height, width):
            self._fail(f"random_crop={self.random_crop} is larger than the {height}x{width} images (after resize and "
                       "center_crop); lower it or raise data.init_args.resize", "random_crop")
        return channels, self.random_crop, self.random_crop

    # ---- building ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:  # fit, validate and test may each call setup; build once
            return
        self._check_holdout()
        splits = self._build_splits()
        for name in SPLITS:
            dataset, labels = splits[name]
            if self.holdout_class is not None and name != "test":
                keep = torch.nonzero(labels != self.holdout_class).flatten()
                dataset = Subset(dataset, keep.tolist())
            if self.random_crop is not None:
                dataset = CenterCropped(dataset, self.random_crop)
            setattr(self, f"{name}_set", dataset)

    def seeded_split(self, n: int, test_fraction: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """Indices of a (train, val, test) split of ``range(n)`` from split_seed."""
        if self.val_fraction + test_fraction >= 1:
            self._fail(
                f"val_fraction + test_fraction = {self.val_fraction + test_fraction:g} leaves no training data",
                "val_fraction",
            )
        train, val, test = split_indices(n, [self.val_fraction, test_fraction], self.split_seed)
        return train, val, test

    def split_pool(self, dataset: Dataset, labels: Tensor, test_fraction: float) -> Splits:
        """Split one pool of items into seeded train/val/test subsets."""
        parts = self.seeded_split(len(labels), test_fraction)
        return {name: (Subset(dataset, idx.tolist()), labels[idx]) for name, idx in zip(SPLITS, parts)}

    # ---- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train")
        if isinstance(dataset, CenterCropped):  # training crops at random, per batch (on_after_batch_transfer)
            dataset = dataset.dataset
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ResumableOrder(dataset, num_replicas=world, rank=rank, shuffle=True, seed=global_seed())
        if trainer is not None:
            # With workers the loader prefetches indices at iter() time, which Lightning does before
            # its own set_epoch when resuming; setting the epoch now keeps that first order right.
            sampler.set_epoch(trainer.current_epoch)
        if self._resume:
            sampler.skip(self._resume["epoch"], self._resume["batches_started"] * self.batch_size)
            self._resume = {}  # one resume per checkpoint load; a reloaded loader starts whole epochs
        return self._loader(dataset, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        """``predict`` runs over the test split."""
        return self._loader(self._dataset("test"))

    def _loader(self, dataset: Dataset, sampler: ResumableOrder | None = None) -> DataLoader:
        loading = self.loading(dataset)
        return DataLoader(
            loading.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            collate_fn=collate_fields,  # (image, label) or dict items -> one dict of named fields
            num_workers=loading.num_workers,
            pin_memory=loading.pin_memory,
            persistent_workers=loading.persistent_workers,
            # Iterator creation draws a base seed; a private generator keeps the global RNG untouched.
            generator=torch.Generator().manual_seed(global_seed()),
        )

    def training_device(self) -> torch.device:
        """The device this process trains on (the trainer's root device; under DDP this rank's), CPU without one."""
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        return device if isinstance(device, torch.device) else torch.device("cpu")

    def loading(self, dataset: Dataset) -> Loading:
        """How a loader over ``dataset`` is built: batched indexing when its batches can be gathered from stored
        tensors, the data on the device per ``data_on_device``, and the worker / pinning defaults."""
        device = self.training_device()
        size = stored_bytes(dataset)  # None: not gathered from stored tensors (files, per-item rendering)
        if self.data_on_device is True and size is None:
            self._fail(f"data_on_device=true needs data held in memory; {type(dataset).__name__} reads its items one "
                       "by one (files, per-item rendering): set it to auto or false", "data_on_device")
        on_device = device.type == "cuda" and size is not None and (
            self.data_on_device is True
            or (self.data_on_device == "auto" and not self.num_workers and size <= DATA_ON_DEVICE_MAX_BYTES)
        )
        view = batched_view(dataset, device if on_device else None) if on_device or (size is not None and self.batched_indexing) else None
        workers = self.num_workers if self.num_workers is not None else default_workers(in_memory=size is not None, device=device)
        workers = 0 if on_device else workers  # (data_on_device=true with workers was refused in __init__)
        pin = self.pin_memory if self.pin_memory is not None else device.type == "cuda"
        persistent = workers > 0 and (self.persistent_workers is None or self.persistent_workers)
        return Loading(dataset=view if view is not None else dataset, num_workers=workers, pin_memory=pin and not on_device,
                       persistent_workers=persistent, on_device=on_device, batched=view is not None)

    def _dataset(self, split: str) -> Dataset:
        dataset = getattr(self, f"{split}_set")
        if dataset is None:  # no silent setup: it may load or download a large dataset
            raise RuntimeError(f"{type(self).__name__}.setup() must run before {split}_dataloader()")
        return dataset

    # ---- mid-epoch resume --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if not _is_fitting(trainer):
            return {}
        batches = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        if batches >= getattr(trainer, "num_training_batches", float("inf")):
            # The epoch's batches are all consumed: nothing to skip on resume. Lightning writes checkpoints after
            # an epoch completed (max_epochs reached, validation-free epoch end) with current_epoch already
            # advanced but the batch counter of the finished epoch, which would skip the *next* epoch's first
            # batches (a finished run continued with a larger budget trained on other images).
            batches = 0
        return {"epoch": int(trainer.current_epoch), "batches_started": batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores this before calling train_dataloader(), which applies the skip.
        if "epoch" in state_dict and "batches_started" in state_dict:
            self._resume = {"epoch": int(state_dict["epoch"]), "batches_started": int(state_dict["batches_started"])}
            # Lightning only knows stateful DataLoaders and would warn that this resume is unreliable; it is not.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        else:
            self._resume = {}

    # ---- augmentation ------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Crops and flips happen here rather than in per-item transforms: per-item randomness would draw
        # from each worker's global RNG and could not be replayed exactly after a resume. With joint_geometry one
        # draw per item applies to all its image fields alike (a source/target pair stays aligned). Evaluation
        # batches were centre-cropped per item already (CenterCropped).
        trainer = self.trainer
        if not (self.random_flip or self.random_crop is not None) or trainer is None or not trainer.training:
            return batch
        device = next(batch[name].device for name in IMAGE_FIELDS if isinstance(batch.get(name), Tensor))
        step = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        seed = flip_seed(global_seed() + 7919 * int(trainer.global_rank), int(trainer.current_epoch), int(step))
        generator = torch.Generator(device=device).manual_seed(seed)
        return augment_fields(batch, IMAGE_FIELDS, generator, crop=self.random_crop, flip=self.random_flip,
                              joint=self.joint_geometry)

    # ---- validation helpers ------------------------------------------------------------------
    def _check_holdout(self) -> None:
        if self.holdout_class is None:
            return
        n = self.num_classes
        if n is None:
            self._fail("holdout_class needs labelled data but this data has no classes", "holdout_class")
        if not 0 <= self.holdout_class < n:
            self._fail(f"holdout_class={self.holdout_class} is not a class in 0..{n - 1}", "holdout_class")

    def _check_positive(self, name: str, value: int) -> None:
        if value < 1:
            self._fail(f"{name} must be a positive integer, got {value}", name)

    def _check_fraction(self, name: str, value: float) -> None:
        if not 0 <= value < 1:
            self._fail(f"{name} must be in [0, 1), got {value}", name)

    def _fail(self, problem: str, param: str) -> NoReturn:
        raise GenResearchError(f"{self.data_name}: {problem}; set data.init_args.{param}")
