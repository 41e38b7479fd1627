"""Bit-exact resume: datamodule state, skipped loaders, seeded flips, and a real Lightning resume."""

from __future__ import annotations

import pytest
import torch

from gen_research.data import Digits, ResumableOrder, flip_batch

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Lightning's small-data / CPU advice
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),  # a torch deprecation inside Lightning itself
]


@pytest.fixture(autouse=True)
def global_seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # restored afterwards, even when seed_everything changes it


@pytest.fixture(scope="module")
def pool():
    """One loaded Digits pool; tests copy its splits instead of reloading."""
    dm = Digits(batch_size=100)
    dm.setup("fit")
    return dm


def _fresh(pool, **kwargs) -> Digits:
    dm = Digits(batch_size=kwargs.pop("batch_size", 100), **kwargs)
    dm.train_set, dm.val_set, dm.test_set = pool.train_set, pool.val_set, pool.test_set
    return dm


def _epoch(loader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)  # what Lightning does at each epoch start
    return [batch["image"] for batch in loader]


def test_state_dict_only_while_fitting(pool, make_trainer):
    dm = _fresh(pool)
    assert dm.state_dict() == {}
    dm.trainer = make_trainer(epoch=2, ready=5)
    assert dm.state_dict() == {"epoch": 2, "batches_started": 5}
    dm.trainer = make_trainer(epoch=2, ready=5, fn="validate")
    assert dm.state_dict() == {}


def test_state_round_trip_skips_the_started_batches(pool, make_trainer):
    saved = _fresh(pool)
    saved.trainer = make_trainer(epoch=1, ready=3)
    state = saved.state_dict()

    full = _epoch(_fresh(pool).train_dataloader(), 1)
    assert len(full) == 15  # 1,437 training images / 100

    resumed = _fresh(pool)
    resumed.load_state_dict(state)
    resumed.trainer = make_trainer(epoch=1)
    loader = resumed.train_dataloader()
    assert isinstance(loader.sampler, ResumableOrder) and loader.sampler.epoch == 1
    tail = _epoch(loader, 1)
    assert len(tail) == 12 and all(torch.equal(a, b) for a, b in zip(tail, full[3:]))
    assert len(loader) == 15  # Lightning counts from the restored batch index up to the full length
    # the next epoch, and a reloaded loader, are whole again
    assert len(_epoch(loader, 2)) == 15
    assert len(_epoch(resumed.train_dataloader(), 1)) == 15


def test_skip_for_an_epoch_that_never_runs_is_harmless(pool, make_trainer):
    dm = _fresh(pool)
    dm.load_state_dict({"epoch": 0, "batches_started": 15})  # saved at the end of epoch 0
    dm.trainer = make_trainer(epoch=1)
    assert len(_epoch(dm.train_dataloader(), 1)) == 15
    dm.load_state_dict({})  # an old checkpoint without data state
    assert len(_epoch(dm.train_dataloader(), 1)) == 15


def test_loaders_never_touch_the_global_rng(pool):
    dm = _fresh(pool, persistent_workers=True)
    rng = torch.get_rng_state()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        assert not loader.persistent_workers  # only meaningful with workers
        list(loader)
    assert torch.equal(torch.get_rng_state(), rng)
    # and the training order does not depend on it either
    torch.manual_seed(123)
    a = _epoch(dm.train_dataloader(), 0)
    torch.manual_seed(456)
    assert all(torch.equal(x, y) for x, y in zip(a, _epoch(dm.train_dataloader(), 0)))


def test_ranks_come_from_the_trainer(pool, make_trainer):
    dm = _fresh(pool)
    dm.trainer = make_trainer(world_size=2, rank=1)
    sampler = dm.train_dataloader().sampler
    assert (sampler.num_replicas, sampler.rank, sampler.seed) == (2, 1, 7)


def test_flip_batch_flips_whole_images_from_the_generator_only():
    images = torch.arange(64 * 2 * 3 * 4, dtype=torch.float32).view(64, 2, 3, 4)
    rng = torch.get_rng_state()
    a = flip_batch(images, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a, flip_batch(images, torch.Generator().manual_seed(0)))
    flipped = torch.tensor([torch.equal(a[i], images[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(a[i], images[i]) for i in range(64)])
    assert (flipped ^ kept).all() and 16 < int(flipped.sum()) < 48
    assert not torch.equal(a, flip_batch(images, torch.Generator().manual_seed(1)))


def test_random_flip_is_seeded_by_epoch_and_step(pool, make_trainer):
    dm = _fresh(pool, random_flip=True)
    batch = next(iter(dm.val_dataloader()))

    def flip(epoch: int, ready: int, training: bool = True) -> torch.Tensor:
        dm.trainer = make_trainer(epoch=epoch, ready=ready, training=training)
        return dm.on_after_batch_transfer(batch, 0)["image"]

    rng = torch.get_rng_state()
    a = flip(1, 4)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a, flip(1, 4)) and not torch.equal(a, batch["image"])
    assert not torch.equal(a, flip(1, 5)) and not torch.equal(a, flip(2, 4))
    assert torch.equal(flip(1, 4, training=False), batch["image"])  # validation is never augmented
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)["label"], batch["label"])
    dm.random_flip = False
    assert torch.equal(flip(1, 4), batch["image"])


@pytest.mark.parametrize("num_workers", [0, 1])  # with workers the first indices are prefetched at iter()
def test_lightning_resume_mid_epoch_is_bit_exact(tmp_path, num_workers):
    """A run resumed from mid-epoch checkpoints sees exactly the batches (and flips) of the uninterrupted run."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(64, 1)
            self.seen: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []

        def training_step(self, batch, batch_idx):
            images, labels = batch["image"], batch["label"]
            self.seen.append((self.current_epoch, batch_idx, images.clone(), labels.clone()))
            return self.layer(images.flatten(1)).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(ckpt_path=None, callbacks=()):
        pl.seed_everything(11, verbose=False)
        model = Recorder()
        trainer = pl.Trainer(
            max_epochs=2, limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=bool(callbacks), callbacks=list(callbacks), accelerator="cpu", devices=1,
        )  # fmt: skip
        trainer.fit(model, Digits(batch_size=128, random_flip=True, num_workers=num_workers), ckpt_path=ckpt_path)
        return model.seen

    full = fit(callbacks=[ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)])
    assert len(full) == 2 * 12  # 1,437 training images / 128 per batch
    for name, done in (("epoch=0-step=4.ckpt", 4), ("epoch=1-step=16.ckpt", 16)):
        resumed = fit(ckpt_path=str(tmp_path / name))
        assert len(resumed) == len(full) - done, name
        for (e1, i1, x1, y1), (e2, i2, x2, y2) in zip(resumed, full[done:]):
            assert (e1, i1) == (e2, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)
