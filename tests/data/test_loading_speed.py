"""Loading speed options: batches of in-memory sets drawn by one tensor index (bit-identical to per-item + collate,
same order and resume), data_on_device, and the worker / pinning defaults."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Subset

from gen_research.data import Digits, ImageFolderData, collate_fields
from gen_research.data import base as base_module
from gen_research.data.base import CenterCropped, default_workers
from gen_research.data.captioned_digits import CaptionedDigits
from gen_research.data.datasets import TensorImageDataset
from gen_research.data.in_memory import BatchedView, batched_view, stored_bytes
from gen_research.data.translation_datasets import MultiDomainDataset, PairedDataset, UnpairedDataset
from gen_research.errors import GenResearchError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def global_seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")


@pytest.fixture(scope="module")
def pool():
    dm = Digits(batch_size=100)
    dm.setup("fit")
    return dm


def _fresh(pool, **kwargs) -> Digits:
    dm = Digits(batch_size=kwargs.pop("batch_size", 100), **kwargs)
    dm.train_set, dm.val_set, dm.test_set = pool.train_set, pool.val_set, pool.test_set
    return dm


def _same_batch(a: dict, b: dict) -> None:
    assert list(a) == list(b)  # the fields, in order
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
            assert torch.equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


def _uint8_set(n: int = 50, size: int = 6) -> TensorImageDataset:
    images = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return TensorImageDataset(images, torch.arange(n) % 10)


def _per_item(dataset, indices):
    return collate_fields([dataset[i] for i in indices])


def _datasets() -> dict[str, object]:
    tensors, other = _uint8_set(), _uint8_set(30)
    floats = TensorImageDataset(torch.rand(40, 1, 8, 8) * 2 - 1, torch.arange(40))
    split = Subset(Subset(tensors, list(range(45, 0, -2))), [3, 1, 4, 0, 5, 9, 2, 6])  # a holdout of a split
    return {
        "uint8": tensors,
        "float": floats,
        "subset of subset": split,
        "center cropped": CenterCropped(Subset(tensors, list(range(20))), 4),
        "paired": Subset(PairedDataset(tensors, _uint8_set(50)), list(range(0, 50, 3))),
        "unpaired": UnpairedDataset(Subset(tensors, list(range(7, 40))), other, seed=3),
        "unpaired reverse": UnpairedDataset(tensors, other, seed=3, reverse=True),
        "multi-domain": MultiDomainDataset(tensors, torch.arange(50) % 3, 3, multi_label=False),
        "multi-label": MultiDomainDataset(tensors, (torch.arange(50)[:, None] >> torch.arange(3)) % 2, 3, multi_label=True),
    }


@pytest.mark.parametrize("name", list(_datasets()))
def test_batched_view_is_bit_identical_to_per_item_collate(name):
    dataset = _datasets()[name]
    view = batched_view(dataset)
    assert isinstance(view, BatchedView) and len(view) == len(dataset)
    n = len(dataset)
    for indices in ([0], list(range(n)), torch.randperm(n, generator=torch.Generator().manual_seed(1))[: max(1, n // 2)].tolist()):
        _same_batch(collate_fields(view.__getitems__(indices)), _per_item(dataset, indices))
    _same_batch(collate_fields([view[2]]), _per_item(dataset, [2]))  # single items come from the dataset itself
    # the view pickles (spawned workers) and gives the same batches afterwards
    again = pickle.loads(pickle.dumps(view))
    _same_batch(collate_fields(again.__getitems__([1, 0, 1])), _per_item(dataset, [1, 0, 1]))


def test_captioned_digits_batches_are_bit_identical():
    dm = CaptionedDigits(limit=10, variants_per_digit=2, image_size=16, depth=True, batch_size=8)
    dm.setup("fit")
    view = batched_view(dm.train_set)
    assert view is not None
    indices = [5, 0, 3, 3, 1]
    _same_batch(collate_fields(view.__getitems__(indices)), _per_item(dm.train_set, indices))


def test_what_cannot_be_indexed_keeps_the_per_item_path(tmp_path, png):
    for i in range(4):
        png(tmp_path / f"{i}.png", size=(8, 8), value=40 * i)
    dm = ImageFolderData(root=str(tmp_path), test_fraction=0.25, val_fraction=0.25, batch_size=2)
    dm.setup("fit")
    assert batched_view(dm.train_set) is None and stored_bytes(dm.train_set) is None
    loading = dm.loading(dm.train_set)
    assert not loading.batched and loading.dataset is dm.train_set

    class Relabelled(Subset):  # a subclass may change items: never gathered by index
        def __getitem__(self, index):
            return self.dataset[self.indices[index]][0], 0

        def __getitems__(self, indices):
            return [self[i] for i in indices]

    assert batched_view(Relabelled(_uint8_set(), [0, 1])) is None


def test_stored_bytes_count_each_tensor_once():
    tensors = _uint8_set(50, 6)
    expected = 50 * 3 * 6 * 6 + 50 * 8  # uint8 images + int64 labels
    assert stored_bytes(tensors) == expected
    assert stored_bytes(Subset(tensors, [1, 2])) == expected  # the whole stored set, not the split's share
    assert stored_bytes(PairedDataset(tensors, tensors)) == expected


def _epochs(loader, epochs=(0, 1)):
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out += [batch for batch in loader]
    return out


@pytest.mark.parametrize("options", [{}, {"data_on_device": True}, {"random_flip": True}])
def test_training_batches_are_those_of_the_per_item_path(pool, options):
    new = _fresh(pool, **options)
    old = _fresh(pool, **options)
    old.batched_indexing = False
    assert isinstance(new.train_dataloader().dataset, BatchedView)
    assert not isinstance(old.train_dataloader().dataset, BatchedView)
    a, b = _epochs(new.train_dataloader()), _epochs(old.train_dataloader())
    assert len(a) == len(b) == 30
    for x, y in zip(a, b):
        _same_batch(x, y)
    for split in ("val", "test"):
        for x, y in zip(getattr(new, f"{split}_dataloader")(), getattr(old, f"{split}_dataloader")()):
            _same_batch(x, y)


def test_ranks_keep_their_distributed_share(pool, make_trainer):
    shares = []
    for rank in (0, 1):
        new, old = _fresh(pool, batch_size=64), _fresh(pool, batch_size=64)
        old.batched_indexing = False
        new.trainer = old.trainer = make_trainer(world_size=2, rank=rank)
        a, b = _epochs(new.train_dataloader(), [3]), _epochs(old.train_dataloader(), [3])
        for x, y in zip(a, b, strict=True):
            _same_batch(x, y)
        shares.append(torch.cat([batch["image"].flatten(1) for batch in a]))
    # the two ranks see different images, together the whole split (1,437 + one repeated to make the shares even)
    assert len(shares[0]) == len(shares[1]) == 719
    assert not torch.equal(shares[0][:5], shares[1][:5])


def test_resume_mid_epoch_skips_exactly_the_started_batches(pool, make_trainer):
    full = _epochs(_fresh(pool).train_dataloader(), [1])
    resumed = _fresh(pool)
    resumed.load_state_dict({"epoch": 1, "batches_started": 4})
    resumed.trainer = make_trainer(epoch=1)
    loader = resumed.train_dataloader()
    assert isinstance(loader.dataset, BatchedView) and len(loader) == 15
    tail = _epochs(loader, [1])
    assert len(tail) == 11
    for x, y in zip(tail, full[4:]):
        _same_batch(x, y)


def test_workers_get_the_same_batches(pool):
    with_workers = _epochs(_fresh(pool, num_workers=1, persistent_workers=True).train_dataloader())
    for x, y in zip(with_workers, _epochs(_fresh(pool).train_dataloader()), strict=True):
        _same_batch(x, y)


# ---- defaults ------------------------------------------------------------------------------------------------
def _on(device: str, **trainer):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), world_size=1, global_rank=0,
                           current_epoch=0, **trainer)


def test_defaults_on_cpu(pool, tmp_path, png, monkeypatch):
    dm = _fresh(pool)
    loading = dm.loading(dm.train_set)
    assert (loading.batched, loading.on_device, loading.num_workers, loading.pin_memory, loading.persistent_workers) == (
        True, False, 0, False, False)
    loader = dm.train_dataloader()
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (0, False, False)

    for i in range(4):
        png(tmp_path / f"{i}.png", size=(8, 8))
    folder = ImageFolderData(root=str(tmp_path), test_fraction=0.25, val_fraction=0.25, batch_size=2)
    folder.setup("fit")
    monkeypatch.setattr(base_module, "available_cpus", lambda: 16)
    loading = folder.loading(folder.train_set)  # training on CPU: workers would take the training step's cores
    assert (loading.batched, loading.num_workers, loading.persistent_workers, loading.pin_memory) == (False, 0, False, False)
    folder.trainer = _on("cuda")
    for cpus, workers in ((1, 0), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr(base_module, "available_cpus", lambda cpus=cpus: cpus)
        loading = folder.loading(folder.train_set)
        assert (loading.num_workers, loading.persistent_workers, loading.pin_memory) == (workers, workers > 0, True)
        assert default_workers(in_memory=True, device=torch.device("cuda")) == 0
    explicit = ImageFolderData(root=str(tmp_path), test_fraction=0.25, val_fraction=0.25, num_workers=2,
                               persistent_workers=False, pin_memory=True)
    explicit.setup("fit")
    loading = explicit.loading(explicit.train_set)
    assert (loading.num_workers, loading.persistent_workers, loading.pin_memory) == (2, False, True)


@pytest.fixture
def fake_cuda(monkeypatch):
    """batched_view as on a GPU, recording the device it was asked for (the tensors stay on the CPU here)."""
    asked = []

    def view(dataset, device=None):
        asked.append(None if device is None else torch.device(device).type)
        return batched_view(dataset)

    monkeypatch.setattr(base_module, "batched_view", view)
    return asked


def test_data_on_device_auto_when_training_on_cuda(pool, fake_cuda, monkeypatch):
    dm = _fresh(pool)
    dm.trainer = _on("cuda")
    loading = dm.loading(dm.train_set)
    assert fake_cuda == ["cuda"] and loading.on_device and loading.batched
    assert (loading.num_workers, loading.pin_memory) == (0, False)  # nothing to pin: it is on the device already

    big = _fresh(pool)
    big.trainer = _on("cuda")
    monkeypatch.setattr(base_module, "DATA_ON_DEVICE_MAX_BYTES", stored_bytes(pool.train_set) - 1)
    loading = big.loading(big.train_set)
    assert fake_cuda[-1] is None and not loading.on_device and loading.pin_memory  # too big: host, pinned
    forced = _fresh(pool, data_on_device=True)
    forced.trainer = _on("cuda")
    assert forced.loading(forced.train_set).on_device and fake_cuda[-1] == "cuda"

    for options in ({"data_on_device": False}, {"num_workers": 1}):
        host = _fresh(pool, **options)
        host.trainer = _on("cuda")
        loading = host.loading(host.train_set)
        assert not loading.on_device and loading.pin_memory and fake_cuda[-1] is None
    cpu = _fresh(pool, data_on_device=True)
    cpu.trainer = _on("cpu")
    assert not cpu.loading(cpu.train_set).on_device  # nothing to move


def test_data_on_device_errors(pool, tmp_path, png):
    with pytest.raises(GenResearchError, match=r"data_on_device must be auto, true or false.*data\.init_args\.data_on_device"):
        Digits(data_on_device="yes")
    with pytest.raises(GenResearchError, match=r"cannot run in 2 worker processes.*data\.init_args\.num_workers"):
        Digits(data_on_device=True, num_workers=2)
    for i in range(4):
        png(tmp_path / f"{i}.png", size=(8, 8))
    folder = ImageFolderData(root=str(tmp_path), test_fraction=0.25, val_fraction=0.25)
    folder.data_on_device = True
    folder.setup("fit")
    with pytest.raises(GenResearchError, match=r"needs data held in memory.*data\.init_args\.data_on_device"):
        folder.train_dataloader()


def test_cli_types():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Digits, "data")
    for text, value in (("true", True), ("false", False), ("auto", "auto")):
        assert parser.parse_args([f"--data.data_on_device={text}"]).data.data_on_device == value
    with pytest.raises(Exception):
        parser.parse_args(["--data.data_on_device=sometimes"])
    config = parser.parse_args([])
    assert (config.data.num_workers, config.data.pin_memory, config.data.persistent_workers) == (None, None, None)
