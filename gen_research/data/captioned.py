"""What the captioned data modules share: caption dropout for classifier-free guidance, the SDXL micro-conditioning
fields, and loaders batched by aspect-ratio bucket (gen_research/data/buckets.py).

Caption dropout replaces a share of *training* captions by the empty prompt (diffusers'
examples/text_to_image/train_text_to_image.py ``--proportion_empty_prompts``; Stable Diffusion trained with 10%).
It is drawn in ``on_after_batch_transfer`` from a generator seeded by (global seed, rank, epoch, step), like the
base module's flips, so a resumed run drops exactly the captions the uninterrupted one did.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from gen_research.data.base import ImageDataModule, global_seed
from gen_research.data.batch import collate_fields
from gen_research.data.buckets import Bucket, BucketBatchOrder, bucket_ids, bucket_loader, parse_buckets
from gen_research.data.transforms import flip_seed

#: The prompt a dropped caption becomes (the unconditional prompt of classifier-free guidance).
EMPTY_PROMPT = ""
#: Fields every captioned module yields; ``depth`` is added where asked for.
CAPTIONED_FIELDS = ("image", "label", "caption", "original_size", "crop_coords")
# Offsets the caption-dropout seed from the flip seed of the same step so the two draws are independent.
_CAPTION_STREAM = 0x5EEDCA97


def caption_dropout_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """The generator seed of one training batch's caption dropout (data/base.py's flip seed, another stream)."""
    return (flip_seed(seed + 7919 * rank, epoch, step) + _CAPTION_STREAM) % (2**63 - 1)


def drop_captions(captions: list[str], rate: float, generator: torch.Generator) -> list[str]:
    """``captions`` with each replaced by :data:`EMPTY_PROMPT` with probability ``rate`` (one draw per caption)."""
    dropped = torch.rand(len(captions), generator=generator) < rate
    return [EMPTY_PROMPT if drop else caption for caption, drop in zip(captions, dropped.tolist())]


class CaptionedDataModule(ImageDataModule):
    """Base of the captioned modules: batches ``{"image", "label", "caption" (list[str]), "original_size" int64
    [B, 2] (h, w), "crop_coords" int64 [B, 2] (top, left)}``, caption dropout in training, optional buckets.

    Args:
        caption_dropout: share of training captions replaced by the empty prompt (0.1 as Stable Diffusion).
        buckets: aspect-ratio buckets as [height, width] pairs; batches then hold one bucket each (train, val, test
            and predict alike). None: one size for every item.
    """

    batch_fields: tuple[str, ...] = CAPTIONED_FIELDS

    def __init__(self, caption_dropout: float = 0.1, buckets: list[list[int]] | None = None, **base: Any) -> None:
        super().__init__(**base)
        if self.random_flip:  # a flip turns "left" into "right"; the caption would lie
            self._fail("random_flip=true would mirror the images but not their captions (\"left\" would become "
                       "\"right\"); set it to false", "random_flip")
        self._check_fraction("caption_dropout", caption_dropout)
        self.caption_dropout = caption_dropout
        self.buckets: list[Bucket] | None = parse_buckets(buckets, self.data_name, self._bucket_multiple())

    def _bucket_multiple(self) -> int:
        """Bucket sides must be multiples of this (1 here; a subclass may ask for more)."""
        return 1

    # ---- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self.buckets is None:
            return super().train_dataloader()
        dataset = self._dataset("train")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        order = BucketBatchOrder(bucket_ids(dataset), self.batch_size, num_replicas=world, rank=rank,
                                 shuffle=True, seed=global_seed())
        if trainer is not None:
            order.set_epoch(trainer.current_epoch)  # as base.py: right before Lightning's own set_epoch on resume
        if self._resume:
            order.skip(self._resume["epoch"], self._resume["batches_started"])
            self._resume = {}
        return self._bucket_loader(dataset, order)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")

    def _evaluation_loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        if self.buckets is None:
            return self._loader(dataset)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return self._bucket_loader(dataset, BucketBatchOrder(bucket_ids(dataset), self.batch_size, world, rank, shuffle=False))

    def _bucket_loader(self, dataset: Dataset, order: BucketBatchOrder) -> DataLoader:
        loading = self.loading(dataset)  # batched indexing / data on the device / worker defaults, as base.py
        return bucket_loader(loading.dataset, order, collate_fields, num_workers=loading.num_workers,
                             pin_memory=loading.pin_memory, persistent_workers=loading.persistent_workers,
                             generator=torch.Generator().manual_seed(global_seed()))

    # ---- caption dropout ---------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        trainer = self.trainer
        if self.caption_dropout == 0 or trainer is None or not trainer.training or "caption" not in batch:
            return batch
        step = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        seed = caption_dropout_seed(global_seed(), int(trainer.global_rank), int(trainer.current_epoch), step)
        captions = drop_captions(list(batch["caption"]), self.caption_dropout, torch.Generator().manual_seed(seed))
        return {**batch, "caption": captions}
