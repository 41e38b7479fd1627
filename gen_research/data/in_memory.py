"""Batches of in-memory data drawn by one tensor index instead of per-item ``__getitem__`` + collate, optionally
from tensors kept on the training device.

The embedded and generated sets (mnist5k, digits, the derived translation digits, the in-memory torchvision sets)
hold their images decoded once, as one tensor (``TensorImageDataset``; uint8 or float [N, C, H, W]), with the
deterministic geometry (resize, centre crop) applied up front. The random crops and flips run per batch after the
transfer (``ImageDataModule.on_after_batch_transfer``), so no per-item transform stands between the sampler's
indices and the stored rows: a batch is ``to_signed_unit(images[index])``. :func:`batched_view` compiles a split
(``Subset`` chains, ``CenterCropped``, the paired / unpaired / multi-domain dict datasets over tensor datasets) into
such an index plan, and wraps it as a dataset whose ``__getitems__`` (what ``DataLoader`` calls for a whole batch
when a dataset has it) returns the collated batch at once. The sampler is untouched (ResumableOrder: the same
seeded order, DistributedSampler share and mid-epoch skip), and every field is bit-identical to the per-item path
(tests/data/test_loading_speed.py), dtypes and key order included.

With ``device`` the stored tensors are copied to that device once; batches are then gathered there and nothing
crosses from the host but the indices of each batch (the split tables are applied on the host, 64 integers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision.transforms.v2 import functional as TF

from gen_research.data.batch import IMAGE_FIELDS, FieldBatch
from gen_research.data.datasets import TensorImageDataset
from gen_research.data.transforms import to_signed_unit
from gen_research.data.translation_datasets import MultiDomainDataset, PairedDataset, UnpairedDataset

if TYPE_CHECKING:
    from gen_research.data.captioned_digits import CaptionedDigitsSet

#: ``data_on_device: auto`` keeps a set on the (CUDA) training device when its stored tensors take at most this many
#: bytes: 512 MiB holds MNIST/Fashion-MNIST (47 MB as uint8) and CIFAR-10 (154 MB) with room to spare, and is under
#: 1% of a 80 GB GPU (each DDP rank holds its own copy).
DATA_ON_DEVICE_MAX_BYTES = 512 * 2**20

def _to(tensor: Tensor, device: torch.device | None) -> Tensor:
    return tensor if device is None else tensor.to(device)


def _rows(tensor: Tensor, index: Tensor) -> Tensor:
    # index_select, not tensor[index]: the same rows, ~10x faster for a batch on CPU (no advanced-indexing setup)
    return tensor.index_select(0, index)


# The plans are small classes, not closures, so that a view pickles into spawned DataLoader workers.
class _Plan:
    """How to gather a batch of one dataset: ``take(index)`` -> one collated dict batch; ``tensors``: the stored
    tensors it reads (host copies, for their size)."""

    tensors: list[Tensor]

    def take(self, index: Tensor) -> dict[str, Any]:
        raise NotImplementedError


class _TensorPlan(_Plan):
    def __init__(self, dataset: TensorImageDataset, device: torch.device | None) -> None:
        self.images, self.labels, self.device = _to(dataset.images, device), _to(dataset.labels, device), device
        self.tensors = [dataset.images, dataset.labels]

    def take(self, index: Tensor) -> dict[str, Any]:
        index = _to(index, self.device)  # the index arithmetic stays on the host; only the leaves' gathers move
        return {"image": to_signed_unit(_rows(self.images, index)), "label": _rows(self.labels, index)}


class _SubsetPlan(_Plan):
    def __init__(self, inner: _Plan, indices: Any) -> None:
        self.inner, self.tensors = inner, inner.tensors
        self.table = torch.as_tensor(list(indices), dtype=torch.int64)

    def take(self, index: Tensor) -> dict[str, Any]:
        return self.inner.take(_rows(self.table, index))


class _CroppedPlan(_Plan):
    def __init__(self, inner: _Plan, size: int) -> None:
        self.inner, self.size, self.tensors = inner, size, inner.tensors

    def take(self, index: Tensor) -> dict[str, Any]:
        size = [self.size, self.size]
        return {name: TF.center_crop(value, size) if name in IMAGE_FIELDS else value
                for name, value in self.inner.take(index).items()}


class _PairedPlan(_Plan):
    def __init__(self, sources: _Plan, targets: _Plan) -> None:
        self.sources, self.targets = sources, targets
        self.tensors = sources.tensors + targets.tensors

    def take(self, index: Tensor) -> dict[str, Any]:
        source, target = self.sources.take(index), self.targets.take(index)
        # "image" is the target as a tensor of its own, as the per-item path collates it separately
        return {"source": source["image"], "target": target["image"], "image": target["image"].clone(),
                "label": source["label"]}


class _UnpairedPlan(_Plan):
    def __init__(self, dataset: UnpairedDataset, a: _Plan, b: _Plan) -> None:
        self.a, self.b, self.reverse = a, b, dataset.reverse
        self.len_a, self.len_b = len(dataset.a), len(dataset.b)  # type: ignore[arg-type]
        self.b_order = dataset.b_order
        self.tensors = a.tensors + b.tensors + [dataset.b_order]

    def take(self, index: Tensor) -> dict[str, Any]:
        a, b = self.a.take(index % self.len_a), self.b.take(_rows(self.b_order, index) % self.len_b)
        zeros = torch.zeros(len(index), dtype=torch.int64, device=a["label"].device)
        if self.reverse:
            return {"source": b["image"], "image": a["image"], "label": b["label"], "domain": zeros + 1, "target_domain": zeros}
        return {"source": a["image"], "image": b["image"], "label": a["label"], "domain": zeros, "target_domain": zeros + 1}


class _MultiDomainPlan(_Plan):
    def __init__(self, dataset: MultiDomainDataset, images: _Plan, device: torch.device | None) -> None:
        self.images, self.device = images, device
        self.domains, self.targets = _to(dataset.domains, device), _to(dataset.targets, device)
        self.tensors = images.tensors + [dataset.domains, dataset.targets]

    def take(self, index: Tensor) -> dict[str, Any]:
        items = self.images.take(index)
        index = _to(index, self.device)
        return {"image": items["image"], "domain": _rows(self.domains, index), "target_domain": _rows(self.targets, index),
                "label": items["label"]}


class _CaptionedPlan(_Plan):
    """captioned_digits' rendered set: one uint8 tensor per bucket; a batch comes from one bucket (a bucketed
    loader's batches do, and without buckets there is one)."""

    def __init__(self, dataset: CaptionedDigitsSet, device: torch.device | None) -> None:
        self.device = device
        self.images = [_to(t, device) for t in dataset.images]
        self.depths = None if dataset.depths is None else [_to(t, device) for t in dataset.depths]
        self.bucket_of = torch.as_tensor(dataset.bucket_of, dtype=torch.int64)
        self.rows = torch.as_tensor(dataset.rows, dtype=torch.int64)
        self.labels, self.captions = _to(dataset.labels, device), dataset.captions
        self.original_size, self.crop_coords = _to(dataset.original_size, device), _to(dataset.crop_coords, device)
        self.tensors = [*dataset.images, *(dataset.depths or []), dataset.labels, dataset.original_size, dataset.crop_coords]

    def take(self, index: Tensor) -> dict[str, Any]:
        buckets = _rows(self.bucket_of, index).unique()
        if len(buckets) > 1:  # as stacking the items would be
            raise RuntimeError(f"a batch mixes items of {len(buckets)} sizes (buckets); batch them by bucket")
        bucket = int(buckets[0]) if len(buckets) else 0
        rows, moved = _to(_rows(self.rows, index), self.device), _to(index, self.device)
        batch = {"image": to_signed_unit(_rows(self.images[bucket], rows)), "label": _rows(self.labels, moved),
                 "caption": [self.captions[i] for i in index.tolist()],
                 "original_size": _rows(self.original_size, moved), "crop_coords": _rows(self.crop_coords, moved)}
        if self.depths is not None:
            batch["depth"] = to_signed_unit(_rows(self.depths[bucket], rows))
        return batch


def _plan(dataset: Dataset, device: torch.device | None) -> _Plan | None:
    from gen_research.data.base import CenterCropped  # base imports this module
    from gen_research.data.captioned_digits import CaptionedDigitsSet  # which imports base

    # Exact types only: a subclass may change what an item is (a Subset subclass overriding __getitem__, say).
    kind = type(dataset)
    if kind is TensorImageDataset:
        return _TensorPlan(dataset, device)  # type: ignore[arg-type]
    if kind is Subset:
        inner = _plan(dataset.dataset, device)  # type: ignore[attr-defined]
        return None if inner is None else _SubsetPlan(inner, dataset.indices)  # type: ignore[attr-defined]
    if kind is CenterCropped:
        inner = _plan(dataset.dataset, device)  # type: ignore[attr-defined]
        return None if inner is None else _CroppedPlan(inner, dataset.size)  # type: ignore[attr-defined]
    if kind is PairedDataset:
        sources, targets = _plan(dataset.sources, device), _plan(dataset.targets, device)  # type: ignore[attr-defined]
        return None if sources is None or targets is None else _PairedPlan(sources, targets)
    if kind is UnpairedDataset:
        a, b = _plan(dataset.a, device), _plan(dataset.b, device)  # type: ignore[attr-defined]
        return None if a is None or b is None else _UnpairedPlan(dataset, a, b)  # type: ignore[arg-type]
    if kind is MultiDomainDataset:
        images = _plan(dataset.images, device)  # type: ignore[attr-defined]
        return None if images is None else _MultiDomainPlan(dataset, images, device)  # type: ignore[arg-type]
    if kind is CaptionedDigitsSet:
        return _CaptionedPlan(dataset, device)  # type: ignore[arg-type]
    return None  # read from disk per item, ...: the per-item path


def stored_bytes(dataset: Dataset) -> int | None:
    """Bytes of the tensors a batch of ``dataset`` is gathered from (each counted once), or None when its batches
    cannot be drawn by indexing (files read per item, per-item transforms)."""
    plan = _plan(dataset, None)
    if plan is None:
        return None
    unique = {id(t): t for t in plan.tensors}.values()
    return sum(t.numel() * t.element_size() for t in unique)


class BatchedView(Dataset):
    """``dataset`` whose batches are gathered by one index (``__getitems__``); single items still come from the
    dataset itself (``__getitem__``). ``device``: where the stored tensors were copied (None: where they are)."""

    def __init__(self, dataset: Dataset, plan: _Plan, device: torch.device | None) -> None:
        self.dataset, self._plan, self.device = dataset, plan, device

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> FieldBatch:
        index = torch.as_tensor(indices, dtype=torch.int64)  # on the host; each stored tensor's gather moves it
        return FieldBatch(self._plan.take(index))


def batched_view(dataset: Dataset, device: torch.device | str | None = None) -> BatchedView | None:
    """``dataset`` as a :class:`BatchedView` (its tensors copied to ``device`` when given), or None when its
    batches cannot be drawn by indexing stored tensors."""
    device = torch.device(device) if device is not None else None
    plan = _plan(dataset, device)
    return None if plan is None else BatchedView(dataset, plan, device)


__all__ = ["DATA_ON_DEVICE_MAX_BYTES", "BatchedView", "batched_view", "stored_bytes"]
