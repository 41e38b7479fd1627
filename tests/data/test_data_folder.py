"""image_folder: labels from class subfolders, flat folders, shapes known before setup, clear errors."""

from __future__ import annotations

import os

import pytest
import torch

from gen_research.data import ImageFolderData
from gen_research.errors import GenResearchError


def _all(dm: ImageFolderData) -> tuple[torch.Tensor, torch.Tensor]:
    dm.setup("fit")
    batches = [b for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()) for b in loader]
    assert all(tuple(b) == dm.batch_fields == ("image", "label") for b in batches)  # dicts of named fields
    return torch.cat([b["image"] for b in batches]), torch.cat([b["label"] for b in batches])


def test_class_subfolders_become_labels(tmp_path, png):
    # grey level encodes the class so we can check every image kept its label
    for name, value, count in (("cat", 0, 4), ("dog", 255, 5), ("emu", 51, 3)):
        for i in range(count):
            png(tmp_path / name / ("sub" if i == 0 else "") / f"{i}.png", value=value)
    (tmp_path / "empty").mkdir()  # folders without images are not classes
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    dm = ImageFolderData(root=str(tmp_path), batch_size=4, val_fraction=0.25, test_fraction=0.25)
    assert dm.class_names == ["cat", "dog", "emu"] and dm.num_classes == 3
    assert dm.image_shape == (3, 10, 12)  # PNGs are 12 wide, 10 high
    images, labels = _all(dm)
    assert images.shape == (12, 3, 10, 12) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 5 + [2] * 3  # the recursive "sub" files count too
    expected = torch.tensor([0, 255, 51])[labels] / 127.5 - 1
    assert torch.allclose(images.mean(dim=(1, 2, 3)), expected)
    assert images.min() == -1 and images.max() == 1
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 3, 3)


def test_flat_folder_has_no_classes_and_labels_zero(tmp_path, png):
    for i in range(5):
        png(tmp_path / f"{i}.png")
    png(tmp_path / "nested" / "deep.png")  # images beside subfolders: one unlabelled pool, recursive
    png(tmp_path / ".hidden" / "skip.png")
    dm = ImageFolderData(root=str(tmp_path), batch_size=2, test_fraction=0.0, val_fraction=0.0)
    assert dm.num_classes is None and dm.class_names == []
    assert len(dm.paths) == 6 and not any(".hidden" in p for p in dm.paths)
    images, labels = _all(dm)
    assert len(images) == 6 and (labels == 0).all()


def test_grayscale_resize_and_crop(tmp_path, png):
    png(tmp_path / "a.png", size=(40, 20), mode="RGB")
    png(tmp_path / "b.jpg", size=(20, 30), mode="L")  # different size and channels
    png(tmp_path / "c.bmp", size=(25, 25), mode="RGB")
    dm = ImageFolderData(root=str(tmp_path), grayscale=True, resize=16, center_crop=16, batch_size=3,
                         val_fraction=0.0, test_fraction=0.0)  # fmt: skip
    assert dm.image_shape == (1, 16, 16)
    dm.setup("fit")
    images = next(iter(dm.train_dataloader()))["image"]
    assert images.shape == (3, 1, 16, 16) and images.min() >= -1 and images.max() <= 1


def test_non_square_resize_keeps_aspect(tmp_path, png):
    for i in range(3):
        png(tmp_path / f"{i}.png", size=(40, 20))
    dm = ImageFolderData(root=str(tmp_path), resize=10, val_fraction=0.0, test_fraction=0.0)
    assert dm.image_shape == (3, 10, 20)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (3, 3, 10, 20)


def test_missing_folder_error_names_path_and_root(tmp_path):
    missing = tmp_path / "x" / "y"
    with pytest.raises(GenResearchError) as info:
        ImageFolderData(root=str(missing))
    message = str(info.value)
    assert str(missing) in message and "data.init_args.root" in message and "\n" not in message


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(GenResearchError, match="no images") as info:
        ImageFolderData(root=str(tmp_path))
    assert str(tmp_path) in str(info.value) and "root" in str(info.value)


def test_mixed_sizes_need_resize_and_crop(tmp_path, png):
    png(tmp_path / "a.png", size=(12, 10))
    png(tmp_path / "b.png", size=(16, 16))
    with pytest.raises(GenResearchError, match="resize.*center_crop") as info:
        ImageFolderData(root=str(tmp_path)).setup("fit")
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)
    # resize alone is not enough when the aspect ratios differ ...
    with pytest.raises(GenResearchError):
        ImageFolderData(root=str(tmp_path), resize=8).setup("fit")
    # ... resize plus center_crop is
    dm = ImageFolderData(root=str(tmp_path), resize=8, center_crop=8, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 8, 8)


def test_unreadable_image_is_a_clear_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(GenResearchError, match="cannot read image"):
        ImageFolderData(root=str(tmp_path))


def test_split_is_seeded(tmp_path, png):
    for i in range(20):
        png(tmp_path / f"{i:02d}.png", value=i * 10)

    def split(seed):
        dm = ImageFolderData(root=str(tmp_path), split_seed=seed, val_fraction=0.2, test_fraction=0.2)
        dm.setup("fit")
        return [[os.path.basename(dm.paths[i]) for i in s.indices] for s in (dm.train_set, dm.val_set, dm.test_set)]

    assert split(0) == split(0) != split(1)
    assert sorted(sum(split(0), [])) == sorted(f"{i:02d}.png" for i in range(20))
