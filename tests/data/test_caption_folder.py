"""caption_folder: sidecar and manifest captions, the micro-conditioning numbers, buckets, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen_research.data.caption_folder import CaptionFolder
from gen_research.errors import GenResearchError

# (width, height, grey value) of the folder's images
IMAGES = {"a.png": (16, 16, 10), "b.png": (24, 16, 60), "c.png": (16, 24, 110), "d.png": (20, 20, 160), "e.png": (32, 16, 210)}


def _folder(tmp_path: Path, sidecars: bool = True) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, (width, height, value) in IMAGES.items():
        Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(tmp_path / name)
        if sidecars:
            (tmp_path / name).with_suffix(".txt").write_text(f"  grey {value} \n")
    return tmp_path


def _items(dm: CaptionFolder) -> dict[str, dict]:
    dm.setup("fit")
    found = {}
    for split in ("train", "val", "test"):
        for item in getattr(dm, f"{split}_set"):
            found[item["caption"]] = item
    return found


def test_sidecar_captions_and_the_center_crop_coordinates(tmp_path):
    dm = CaptionFolder(root=str(_folder(tmp_path)), resize=16, center_crop=16, val_fraction=0.2, test_fraction=0.2)
    items = _items(dm)
    assert set(items) == {f"grey {value}" for _, _, value in IMAGES.values()}  # stripped
    wide = items["grey 60"]  # 24x16 (w x h): resized to 24x16, crop 16x16 at left 4
    assert wide["image"].shape == (3, 16, 16)
    assert torch.allclose(wide["image"], torch.full((3, 16, 16), 60 / 127.5 - 1))
    assert wide["original_size"].tolist() == [16, 24] and wide["crop_coords"].tolist() == [0, 4]
    tall = items["grey 110"]
    assert tall["original_size"].tolist() == [24, 16] and tall["crop_coords"].tolist() == [4, 0]
    assert items["grey 210"]["crop_coords"].tolist() == [0, 8]
    assert dm.image_shape == (3, 16, 16) and dm.num_classes is None


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_captions(tmp_path, kind):
    root = _folder(tmp_path, sidecars=False)
    rows = [("a.png", "first, with a comma"), ("d.png", "second")]
    if kind == "csv":
        text = "file,caption\n" + "".join(f'{file},"{caption}"\n' for file, caption in rows)
    else:
        text = "".join(json.dumps({"file": file, "caption": caption}) + "\n" for file, caption in rows)
    (root / f"captions.{kind}").write_text(text)
    dm = CaptionFolder(root=str(root), manifest=f"captions.{kind}", resize=8, center_crop=8, channels=1,
                       val_fraction=0.0, test_fraction=0.0)
    items = _items(dm)
    assert set(items) == {"first, with a comma", "second"}
    assert items["second"]["image"].shape == (1, 8, 8)
    assert items["second"]["original_size"].tolist() == [20, 20]


def test_buckets_by_aspect_ratio(tmp_path, make_trainer):
    dm = CaptionFolder(root=str(_folder(tmp_path)), buckets=[[16, 16], [16, 24], [24, 16]], batch_size=4,
                       val_fraction=0.0, test_fraction=0.0, caption_dropout=0.0)
    dm.setup("fit")
    dm.trainer = make_trainer()
    sizes = {}
    for batch in dm.train_dataloader():
        for caption, original in zip(batch["caption"], batch["original_size"].tolist()):
            sizes[caption] = (tuple(batch["image"].shape[-2:]), original)
    assert sizes["grey 60"] == ((16, 24), [16, 24])
    assert sizes["grey 110"] == ((24, 16), [24, 16])
    assert sizes["grey 160"][0] == (16, 16)
    assert sizes["grey 210"][0] == (16, 24)  # 16x32 is nearest 16x24: resized to 16x32, centre-cropped


def test_missing_caption_missing_file_empty_folder_are_one_line_errors(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "c.txt").unlink()
    with pytest.raises(GenResearchError, match=r"c\.png.*has no caption file 'c\.txt'"):
        CaptionFolder(root=str(root))
    (root / "m.jsonl").write_text(json.dumps({"file": "a.png", "caption": "x"}) + "\n"
                                  + json.dumps({"file": "gone.png", "caption": "y"}) + "\n")
    with pytest.raises(GenResearchError, match=r"line 2 names 'gone\.png'"):
        CaptionFolder(root=str(root), manifest="m.jsonl")
    (root / "m.csv").write_text("path,text\na.png,x\n")
    with pytest.raises(GenResearchError, match="not file,caption"):
        CaptionFolder(root=str(root), manifest="m.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenResearchError, match="no images .*data.init_args.root") as error:
        CaptionFolder(root=str(tmp_path / "empty"))
    assert "\n" not in str(error.value)
    with pytest.raises(GenResearchError, match="data.init_args.channels"):
        CaptionFolder(root=str(root), manifest="m.jsonl", channels=2)
    with pytest.raises(GenResearchError, match="data.init_args.random_flip"):
        CaptionFolder(root=str(root), random_flip=True)
