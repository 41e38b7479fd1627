"""Seeded random crops (and flips) on paired batches: both images alike, replayable, independent when not joint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gen_research.data import IMAGE_FIELDS, flip_fields
from gen_research.data.transforms import augment_fields, center_crop_item
from gen_research.data.translation_folders import PairedFolderData
from gen_research.errors import GenResearchError


def _pair_batch(count: int = 32, size: int = 8) -> dict[str, torch.Tensor]:
    source = torch.randn(count, 2, size, size, generator=torch.Generator().manual_seed(3))  # no two windows alike
    return {"source": source, "target": -source, "image": -source, "label": torch.arange(count)}


def _windows(image: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Every size x size window of [C, H, W], plain and flipped."""
    h, w = image.shape[-2:]
    crops = [image[:, i : i + size, j : j + size] for i in range(h - size + 1) for j in range(w - size + 1)]
    return crops + [c.flip(-1) for c in crops]


def _window_index(original: torch.Tensor, crop: torch.Tensor) -> int:
    matches = [k for k, window in enumerate(_windows(original, crop.shape[-1])) if torch.equal(window, crop)]
    assert len(matches) == 1  # each output is exactly one window of its own input
    return matches[0]


def test_a_joint_crop_and_flip_keep_the_pair_aligned_and_are_real_crops():
    batch = _pair_batch()
    out = augment_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(0), crop=5, flip=True, joint=True)
    assert out["source"].shape == (32, 2, 5, 5) and torch.equal(out["target"], -out["source"])
    assert torch.equal(out["image"], out["target"]) and torch.equal(out["label"], batch["label"])
    chosen = {_window_index(batch["source"][i], out["source"][i]) for i in range(32)}
    assert len(chosen) > 8  # items draw their own window: 16 corners x 2 flips possible


def test_crops_replay_for_the_same_generator_seed_and_differ_for_another():
    batch = _pair_batch()
    first = augment_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(5), crop=5, flip=True)
    again = augment_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(5), crop=5, flip=True)
    other = augment_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(6), crop=5, flip=True)
    assert torch.equal(first["source"], again["source"]) and not torch.equal(first["source"], other["source"])


def test_without_a_crop_joint_flips_are_exactly_flip_fields():
    batch = _pair_batch()
    out = augment_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(9), crop=None, flip=True)
    expected = flip_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(9))
    assert all(torch.equal(out[name], expected[name]) for name in IMAGE_FIELDS)


def test_fields_draw_separately_when_geometry_is_not_joint():
    source = _pair_batch()["source"]
    batch = {"source": source, "image": source.clone()}
    joint = augment_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(1), crop=5, flip=True, joint=True)
    apart = augment_fields(batch, IMAGE_FIELDS, torch.Generator().manual_seed(1), crop=5, flip=True, joint=False)
    assert torch.equal(joint["image"], joint["source"])
    differs = [not torch.equal(apart["image"][i], apart["source"][i]) for i in range(32)]
    assert sum(differs) > 20  # 32 independent draws among 32 (corner, flip) choices: most differ
    assert all(_window_index(source[i], apart["image"][i]) >= 0 for i in range(32))


def test_center_crop_item_crops_the_image_fields_of_dicts_and_tuples():
    image = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6)
    item = center_crop_item({"image": image, "source": image, "label": 3, "domain": torch.ones(4)}, IMAGE_FIELDS, 4)
    assert torch.equal(item["image"], image[:, 1:5, 1:5]) and torch.equal(item["source"], image[:, 1:5, 1:5])
    assert item["label"] == 3 and item["domain"].shape == (4,)
    assert torch.equal(center_crop_item((image, 1), IMAGE_FIELDS, 4)[0], image[:, 1:5, 1:5])


def _inverted_pairs(root, count: int = 12, size: tuple[int, int] = (10, 9)) -> None:
    """root/A/i.png random RGB noise and root/B/i.png its inversion (B = 255 - A), so target == -source."""
    rng = np.random.default_rng(0)
    for folder in ("A", "B"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        a = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
        Image.fromarray(a).save(root / "A" / f"{i}.png")
        Image.fromarray(255 - a).save(root / "B" / f"{i}.png")


def test_paired_folder_training_batches_stay_aligned_and_evaluation_is_centre_cropped(tmp_path, make_trainer, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    _inverted_pairs(tmp_path)
    dm = PairedFolderData(root=str(tmp_path), batch_size=4, val_fraction=0.25, test_fraction=0.25, random_crop=6,
                          random_flip=True)
    assert dm.image_shape == (3, 6, 6) and dm.source_shape == (3, 6, 6)
    dm.setup("fit")
    item = dm.train_set[0]  # read directly (evaluation's reference features): centre-cropped like val/test
    assert item["source"].shape == (3, 6, 6) and torch.allclose(item["target"], -item["source"], atol=1e-6)
    seen = []
    for step, batch in enumerate(dm.train_dataloader()):
        assert batch["source"].shape[1:] == (3, 10, 9)  # the random crop is drawn per batch, after transfer
        dm.trainer = make_trainer(epoch=0, ready=step)
        out = dm.on_after_batch_transfer(batch, 0)
        assert out["source"].shape[1:] == (3, 6, 6) and torch.allclose(out["target"], -out["source"], atol=1e-6)
        assert torch.equal(dm.on_after_batch_transfer(batch, 0)["source"], out["source"])  # replayed on resume
        seen.append((batch, out))
    assert len(seen) == 2  # 6 training pairs in batches of 4
    batch, out = seen[0]
    dm.trainer = make_trainer(epoch=0, ready=1)
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)["source"], out["source"])  # another step, other crops
    dm.trainer = make_trainer(epoch=0, ready=0, training=False)
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            assert batch["source"].shape[-2:] == (6, 6)
            assert torch.equal(dm.on_after_batch_transfer(batch, 0)["source"], batch["source"])  # no random geometry


def test_a_random_crop_larger_than_the_images_is_refused(tmp_path):
    _inverted_pairs(tmp_path, count=2)
    with pytest.raises(GenResearchError, match=r"random_crop=10 is larger than the 10x9 images.*data.init_args.resize"):
        PairedFolderData(root=str(tmp_path), random_crop=10)
