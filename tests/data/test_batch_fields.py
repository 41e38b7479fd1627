"""The batch contract on the data side: dict batches of named fields, and flips applied alike to every image field."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gen_research.data import IMAGE_FIELDS, Digits, ImageDataModule, collate_fields, flip_batch, flip_fields
from gen_research.data.batch import as_fields, batch_length
from gen_research.data.transforms import flip_seed
from gen_research.models.contract import BATCH_FIELDS
from gen_research.registry import DATA, load_builtins


def _pair_batch(count: int = 64) -> dict[str, torch.Tensor]:
    """Asymmetric images (no flip leaves one unchanged) and a target that is a known function of the source."""
    source = torch.randn(count, 1, 4, 6, generator=torch.Generator().manual_seed(3))
    return {"image": -source, "source": source, "target": -source, "label": torch.arange(count)}


def test_collate_names_the_fields_of_tuple_and_dict_items():
    images, labels = torch.randn(5, 1, 2, 2), torch.arange(5)
    batch = next(iter(DataLoader(TensorDataset(images, labels), batch_size=5, collate_fn=collate_fields)))
    assert tuple(batch) == ("image", "label") and torch.equal(batch["image"], images) and torch.equal(batch["label"], labels)
    items = [{"source": images[i], "target": -images[i], "label": labels[i]} for i in range(5)]
    batch = collate_fields(items)
    assert tuple(batch) == ("source", "target", "label") and torch.equal(batch["target"], -images)
    assert tuple(collate_fields([images[0], images[1]])) == ("image",)  # a bare image is the image field
    assert batch_length(batch) == 5
    with pytest.raises(ValueError, match="at most 2 fields"):
        as_fields((images, labels, labels))


def test_flips_keep_a_source_target_pair_aligned():
    batch = _pair_batch()
    flipped = flip_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(0))
    assert torch.equal(flipped["target"], -flipped["source"]) and torch.equal(flipped["image"], flipped["target"])
    flipped_items = torch.tensor([torch.equal(flipped["source"][i], batch["source"][i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(flipped["source"][i], batch["source"][i]) for i in range(64)])
    assert (flipped_items ^ kept).all() and 16 < int(flipped_items.sum()) < 48  # some flipped, some not, each whole
    assert torch.equal(flipped["label"], batch["label"])  # not an image field: untouched
    assert torch.equal(batch["source"], _pair_batch()["source"])  # the input batch is not modified


def test_the_same_seed_replays_the_same_flips_and_matches_flip_batch():
    batch = _pair_batch()
    rng = torch.get_rng_state()
    first = flip_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(11))
    again = flip_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(11))
    other = flip_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(12))
    assert torch.equal(torch.get_rng_state(), rng)  # only the given generator is drawn from
    assert all(torch.equal(first[name], again[name]) for name in IMAGE_FIELDS)
    assert not torch.equal(first["source"], other["source"])
    # An image-only batch flips exactly as flip_batch did before pairs existed: old runs resume bit-identically.
    assert torch.equal(flip_fields({"image": batch["source"]}, IMAGE_FIELDS, torch.Generator().manual_seed(11))["image"],
                       flip_batch(batch["source"], torch.Generator().manual_seed(11)))


def test_image_fields_of_different_lengths_are_refused():
    batch = {"source": torch.zeros(4, 1, 2, 2), "target": torch.zeros(3, 1, 2, 2)}
    with pytest.raises(ValueError, match="source 4, target 3"):
        flip_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(0))


def test_datamodule_flips_every_image_field_of_a_training_batch_alike(make_trainer, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    dm = Digits(random_flip=True)
    dm.trainer = make_trainer(epoch=1, ready=4)
    batch = _pair_batch()
    flipped = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(flipped["target"], -flipped["source"]) and not torch.equal(flipped["source"], batch["source"])
    expected = flip_batch(batch["source"], torch.Generator().manual_seed(flip_seed(7, 1, 4)))  # the seed of (epoch, step)
    assert torch.equal(flipped["source"], expected)
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)["source"], flipped["source"])  # replayed on resume


def test_every_registered_data_module_declares_known_batch_fields():
    load_builtins()
    for entry in DATA:
        fields = entry.obj.batch_fields
        assert isinstance(fields, tuple) and fields and set(fields) <= set(BATCH_FIELDS), (entry.name, fields)
        if issubclass(entry.obj, ImageDataModule):
            assert "image" in fields, entry.name
