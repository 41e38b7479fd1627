"""Aspect-ratio buckets: one size per batch, seeded and resumable batch order, DDP shards, the data-module wiring."""

from __future__ import annotations

import pytest
import torch

from gen_research.data.buckets import BucketBatchOrder, bucket_ids, nearest_bucket, parse_buckets
from gen_research.data.captioned_digits import CaptionedDigits
from gen_research.errors import GenResearchError

BUCKETS = [[32, 32], [24, 40], [40, 24]]


def _bucket_of(n: int = 103, buckets: int = 3, seed: int = 5) -> list[int]:
    return torch.randint(0, buckets, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_every_batch_holds_one_bucket_and_an_epoch_covers_each_index_once():
    bucket_of = _bucket_of()
    order = BucketBatchOrder(bucket_of, batch_size=8, seed=3)
    order.set_epoch(2)
    batches = list(order)
    assert len(batches) == len(order)
    assert all(len({bucket_of[i] for i in batch}) == 1 for batch in batches)
    assert all(1 <= len(batch) <= 8 for batch in batches)
    assert sorted(i for batch in batches for i in batch) == list(range(len(bucket_of)))


def test_order_depends_only_on_seed_and_epoch():
    bucket_of = _bucket_of()
    first, again, other_seed = (BucketBatchOrder(bucket_of, 8, seed=s) for s in (3, 3, 4))
    for order in (first, again, other_seed):
        order.set_epoch(1)
    assert list(first) == list(again)
    assert list(first) != list(other_seed)
    again.set_epoch(2)
    assert list(first) != list(again)


def test_skip_yields_exactly_the_remaining_batches_of_that_epoch_only():
    bucket_of = _bucket_of()
    whole = BucketBatchOrder(bucket_of, 8, seed=3)
    whole.set_epoch(1)
    resumed = BucketBatchOrder(bucket_of, 8, seed=3)
    resumed.skip(1, 5)
    resumed.set_epoch(1)
    assert list(resumed) == list(whole)[5:]
    assert len(resumed) == len(whole)  # Lightning runs the epoch until its restored counter reaches len()
    resumed.set_epoch(2)
    whole.set_epoch(2)
    assert list(resumed) == list(whole)


def test_two_ranks_get_disjoint_batches_of_equal_count():
    bucket_of = [0] * 48 + [1] * 48  # 12 batches of 8: no padding needed
    ranks = [BucketBatchOrder(bucket_of, 8, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    shares = [list(order) for order in ranks]
    assert len(shares[0]) == len(shares[1]) == 6
    items = [{i for batch in share for i in batch} for share in shares]
    assert not items[0] & items[1]
    assert items[0] | items[1] == set(range(96))


def test_uneven_ranks_are_padded_like_distributed_sampler():
    bucket_of = _bucket_of(n=50)
    shares = [list(BucketBatchOrder(bucket_of, 8, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(share) for share in shares}) == 1  # DDP needs equal step counts
    assert {i for share in shares for batch in share for i in batch} == set(range(50))


def test_unshuffled_order_is_bucket_then_index():
    order = BucketBatchOrder([1, 0, 1, 0, 0], batch_size=2, shuffle=False)
    assert list(order) == [[1, 3], [4], [0, 2]]


def test_parse_and_nearest_bucket():
    assert parse_buckets(BUCKETS, "d") == [(32, 32), (24, 40), (40, 24)]
    assert parse_buckets(None, "d") is None
    assert nearest_bucket(300, 500, parse_buckets(BUCKETS, "d")) == 1
    assert nearest_bucket(500, 310, parse_buckets(BUCKETS, "d")) == 2
    for bad in ([], [[32]], [[32, 0]], [[32, 32], [32, 32]], "32x32"):
        with pytest.raises(GenResearchError, match="data.init_args.buckets"):
            parse_buckets(bad, "d")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bucketed() -> CaptionedDigits:
    dm = CaptionedDigits(buckets=BUCKETS, limit=120, variants_per_digit=1, batch_size=8, caption_dropout=0.0)
    dm.setup("fit")
    return dm


def test_data_module_batches_stack_one_bucket_each_and_match_the_attributes(bucketed, make_trainer):
    bucketed.trainer = make_trainer(epoch=0)
    batches = list(bucketed.train_dataloader())
    sizes = {tuple(batch["image"].shape[-2:]) for batch in batches}
    assert sizes == {(32, 32), (24, 40), (40, 24)}
    assert sum(len(batch["caption"]) for batch in batches) == len(bucketed.train_set)
    for batch in batches:
        assert batch["image"].shape[1] == 3 and batch["image"].dtype == torch.float32
        # original_size is the rendered size; without micro_conditioning that is the bucket itself
        assert (batch["original_size"] == torch.tensor(batch["image"].shape[-2:])).all()
    indices = bucketed.train_set.indices
    assert all(tuple(bucketed.attributes(i)["bucket"]) in {(32, 32), (24, 40), (40, 24)} for i in indices)
    val_sizes = [tuple(batch["image"].shape[-2:]) for batch in bucketed.val_dataloader()]
    assert set(val_sizes) <= sizes and len(val_sizes) >= 3


def test_data_module_resume_skips_the_started_batches(bucketed, make_trainer):
    bucketed.trainer = make_trainer(epoch=1)
    whole = [batch["caption"] for batch in bucketed.train_dataloader()]
    bucketed.trainer = make_trainer(epoch=1, ready=3)
    state = bucketed.state_dict()
    assert state == {"epoch": 1, "batches_started": 3}
    bucketed.load_state_dict(state)
    bucketed.trainer = make_trainer(epoch=1)
    assert [batch["caption"] for batch in bucketed.train_dataloader()] == whole[3:]
    assert [batch["caption"] for batch in bucketed.train_dataloader()] == whole  # one resume per checkpoint load


def test_lightning_trains_on_bucketed_batches_and_counts_them(bucketed):
    import lightning.pytorch as pl

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.sizes: list[tuple[int, int]] = []

        def training_step(self, batch, batch_idx):
            self.sizes.append(tuple(batch["image"].shape[-2:]))
            assert len(batch["caption"]) == len(batch["image"])
            return (self.weight - batch["image"].mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    probe = Probe()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    bucketed.trainer = None
    trainer.fit(probe, datamodule=bucketed)
    expected = BucketBatchOrder(bucket_ids(bucketed.train_set), 8)
    assert len(probe.sizes) == len(expected) == trainer.num_training_batches
    assert set(probe.sizes) == {(32, 32), (24, 40), (40, 24)}
