"""torchvision-backed sets: static facts, one-line offline errors, and real loading of a fake MNIST."""

from __future__ import annotations

import socket

import pytest
import torch

from gen_research.data import CelebAData, CIFAR10Data, FashionMNISTData, MNISTData
from gen_research.errors import GenResearchError
from gen_research.registry import DATA

SETS = [
    ("mnist", MNISTData, (1, 28, 28), 10),
    ("fashion_mnist", FashionMNISTData, (1, 28, 28), 10),
    ("cifar10", CIFAR10Data, (3, 32, 32), 10),
    ("celeba", CelebAData, (3, 64, 64), None),
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail name lookups as an offline machine does, so these tests never download on a connected one."""

    def offline(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)


@pytest.mark.parametrize("name, cls, shape, classes", SETS)
def test_static_facts_need_no_data(name, cls, shape, classes, tmp_path):
    assert DATA.get(name) is cls
    dm = cls(root=str(tmp_path / "nothing-here"))
    assert dm.image_shape == shape and dm.num_classes == classes
    assert cls(root=str(tmp_path), resize=16, center_crop=16).image_shape == (shape[0], 16, 16)


def test_celeba_without_crop_keeps_its_aspect(tmp_path):
    assert CelebAData(root=str(tmp_path), resize=None, center_crop=None).image_shape == (3, 218, 178)


@pytest.mark.parametrize("name, cls, shape, classes", SETS)
@pytest.mark.parametrize("hook", ["prepare_data", "setup"])
def test_offline_missing_data_is_one_line_error(name, cls, shape, classes, hook, tmp_path, capfd):
    dm = cls(root=str(tmp_path), download=True)  # no network here: the download fails fast
    with pytest.raises(GenResearchError) as info:
        getattr(dm, hook)()
    message = str(info.value)
    assert message.startswith(f"{name}: not found under {str(tmp_path)!r}")
    assert "download failed" in message and "data.init_args.root" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # torchvision's "Downloading ..." chatter is swallowed


def test_download_false_says_how_to_fix(tmp_path):
    with pytest.raises(GenResearchError, match=r"data.init_args.download to true") as info:
        MNISTData(root=str(tmp_path), download=False).prepare_data()
    assert str(tmp_path) in str(info.value)


def _pixel_and_label(dataset, i):
    image, label = dataset[i]
    return image, int(label)


def test_fake_mnist_loads_through_torchvision(fake_mnist_root):
    # image i of the fake train set has every pixel = 2 * i and label i % 10 (see conftest)
    dm = MNISTData(root=str(fake_mnist_root), download=True, batch_size=16, val_fraction=0.2)
    dm.prepare_data()  # present: no download attempted
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (80, 20, 20)
    seen = set()
    for split in (dm.train_set, dm.val_set):
        for j in range(len(split)):
            image, label = _pixel_and_label(split, j)
            assert image.shape == (1, 28, 28) and image.dtype == torch.float32
            raw = round((float(image[0, 0, 0]) + 1) * 127.5)
            assert (image == image[0, 0, 0]).all() and raw % 2 == 0
            seen.add(raw // 2)
            assert label == (raw // 2) % 10  # image and label stayed paired
    assert seen == set(range(100))  # train + val cover the official train split exactly
    test_values = sorted(round((float(dm.test_set[j][0][0, 0, 0]) + 1) * 127.5) for j in range(20))
    assert test_values == list(range(200, 220))  # the official test split, untouched
    batch = next(iter(dm.train_dataloader()))
    images, labels = batch["image"], batch["label"]
    assert images.shape == (16, 1, 28, 28) and labels.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1


def test_fake_mnist_holdout_and_resize(fake_mnist_root):
    dm = MNISTData(root=str(fake_mnist_root), holdout_class=4, resize=14, batch_size=8)
    assert dm.image_shape == (1, 14, 14)
    dm.setup("fit")
    labels = [int(dm.train_set[j][1]) for j in range(len(dm.train_set))]
    labels += [int(dm.val_set[j][1]) for j in range(len(dm.val_set))]
    assert 4 not in labels and len(labels) == 90
    assert 4 in [int(dm.test_set[j][1]) for j in range(len(dm.test_set))]
    assert dm.train_set[0][0].shape == (1, 14, 14)


def test_holdout_needs_labelled_data(tmp_path):
    with pytest.raises(GenResearchError, match="data.init_args.holdout_class"):
        CelebAData(root=str(tmp_path), holdout_class=0).setup("fit")  # fails before looking for files
