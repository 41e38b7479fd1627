"""Aspect-ratio buckets (SDXL, Podell et al. 2023, section 2.3): every item has one of a few (height, width) sizes and
a batch holds items of one size only, so batches stack without padding or square crops.

:class:`BucketBatchOrder` is the bucketed counterpart of :class:`~gen_research.data.resumable_order.ResumableOrder`:
the order of an epoch's batches depends only on (seed, epoch), batches are sharded over DDP ranks with explicit
``num_replicas``/``rank``, and :meth:`BucketBatchOrder.skip` leaves out the batches a resumed run already trained on.

It yields whole batches (lists of indices) as a loader *sampler* with ``batch_size=None`` (:func:`bucket_loader`),
not as a ``batch_sampler``: Lightning leaves a ``DistributedSampler`` in place under DDP, while it would try to
rebuild a custom batch_sampler around its own distributed sampler and fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from gen_research.errors import GenResearchError

Bucket = tuple[int, int]  # (height, width)


def parse_buckets(buckets: Sequence[Sequence[int]] | None, data_name: str, multiple_of: int = 1) -> list[Bucket] | None:
    """``[[h, w], ...]`` from YAML as a list of (h, w) tuples (None: one square size), one-line errors otherwise."""
    if buckets is None:
        return None
    hint = "set data.init_args.buckets to a list of [height, width] pairs such as [[32, 32], [24, 40]] or null"
    if isinstance(buckets, (str, bytes)) or not isinstance(buckets, Sequence) or len(buckets) == 0:
        raise GenResearchError(f"{data_name}: buckets={buckets!r} is not a non-empty list of sizes; {hint}")
    parsed: list[Bucket] = []
    for bucket in buckets:
        ok = isinstance(bucket, Sequence) and not isinstance(bucket, str) and len(bucket) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in bucket)
        if not ok:
            raise GenResearchError(f"{data_name}: bucket {bucket!r} is not a [height, width] pair of positive integers; {hint}")
        if bucket[0] % multiple_of or bucket[1] % multiple_of:
            raise GenResearchError(f"{data_name}: bucket {list(bucket)} must have sides divisible by {multiple_of}; {hint}")
        if tuple(bucket) in parsed:
            raise GenResearchError(f"{data_name}: bucket {list(bucket)} is listed twice; {hint}")
        parsed.append((int(bucket[0]), int(bucket[1])))
    return parsed


def nearest_bucket(height: int, width: int, buckets: Sequence[Bucket]) -> int:
    """Index of the bucket whose aspect ratio is closest to height/width (log ratio; SDXL's bucketing of its data)."""
    ratio = math.log(height / width)
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][0] / buckets[i][1]) - ratio))


class BucketBatchOrder(DistributedSampler):
    """Seeded batches of one bucket each; yields lists of indices (``len()`` = batches per rank).

    Per epoch: a (seed + epoch) generator permutes all items (as ``DistributedSampler`` does), each bucket's items
    in that order are cut into batches of ``batch_size`` (the last one may be smaller unless ``drop_last``), the
    batches themselves are permuted, and rank r takes batches r, r + R, ... . Like ``DistributedSampler`` the list
    is padded by repeating its first batches so every rank gets the same number (DDP needs equal step counts).
    With ``shuffle=False`` (validation) items and batches keep bucket-then-index order.

    Args:
        bucket_of: the bucket id of each dataset index.
        batch_size: items per batch (per rank).
        num_replicas, rank: the DDP world size and this process's rank (explicit: no process group needed).
        shuffle: permute items and batches each epoch.
        seed: the seed of every epoch's permutation (with the epoch).
        drop_last: drop each bucket's incomplete last batch.
    """

    def __init__(self, bucket_of: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(list(bucket_of), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,  # type: ignore[arg-type]
                         drop_last=drop_last)
        self.bucket_of = torch.as_tensor(list(bucket_of), dtype=torch.int64)
        self.batch_size = batch_size
        self._skip_epoch: int | None = None
        self._skip_batches = 0
        total = sum(self._bucket_batch_counts())
        self.num_batches = math.ceil(total / num_replicas) if total else 0  # per rank, after padding

    def _bucket_batch_counts(self) -> list[int]:
        sizes = torch.bincount(self.bucket_of).tolist() if len(self.bucket_of) else []
        per = (lambda n: n // self.batch_size) if self.drop_last else (lambda n: math.ceil(n / self.batch_size))
        return [per(n) for n in sizes]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch`` in order, before sharding and padding."""
        n = len(self.bucket_of)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        batches: list[list[int]] = []
        for bucket in range(int(self.bucket_of.max()) + 1 if n else 0):
            members = order[self.bucket_of[order] == bucket].tolist()
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's whole share of ``epoch`` (padded), before any skip."""
        batches = self.epoch_batches(epoch)
        needed = self.num_batches * self.num_replicas
        if batches and len(batches) < needed:
            batches = (batches * math.ceil(needed / len(batches)))[:needed]
        return batches[self.rank : needed : self.num_replicas]

    def skip(self, epoch: int, num_batches: int) -> None:
        """In ``epoch`` only, leave out this rank's first ``num_batches`` batches (mid-epoch resume)."""
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        self._skip_epoch, self._skip_batches = int(epoch), int(num_batches)

    @property
    def num_skipped(self) -> int:
        """How many leading batches the current epoch leaves out (0 outside the skipped epoch)."""
        if self._skip_epoch is None or self.epoch != self._skip_epoch:
            return 0
        return min(self._skip_batches, self.num_batches)

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        return iter(self.rank_batches(self.epoch)[self.num_skipped :])

    def __len__(self) -> int:
        # The whole share, skipped or not: Lightning restores its batch counter on resume (ResumableOrder's reason).
        return self.num_batches


class BatchFetch(Dataset):
    """A view of ``dataset`` indexed by a list of indices (one whole batch per fetch, for a loader with
    ``batch_size=None`` whose sampler yields batches)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, indices: list[int]) -> Any:
        fetch = getattr(self.dataset, "__getitems__", None)  # a whole batch at once (data/in_memory.py), as DataLoader
        return fetch(list(indices)) if callable(fetch) else [self.dataset[i] for i in indices]


def bucket_ids(dataset: Dataset) -> list[int]:
    """The bucket id of each index of ``dataset``: its own ``bucket_of``, looked up through any Subsets."""
    if isinstance(dataset, Subset):
        inner = bucket_ids(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    bucket_of = getattr(dataset, "bucket_of", None)
    if bucket_of is None:
        raise TypeError(f"{type(dataset).__name__} has no bucket_of: it cannot be batched by bucket")
    return list(bucket_of)


def bucket_loader(dataset: Dataset, order: BucketBatchOrder, collate_fn: Callable[[list[Any]], Any],
                  **loader_options: Any) -> DataLoader:
    """A DataLoader yielding ``order``'s batches of ``dataset`` (``loader_options``: num_workers, pin_memory, ...)."""
    return DataLoader(BatchFetch(dataset), batch_size=None, sampler=order, collate_fn=collate_fn, **loader_options)
