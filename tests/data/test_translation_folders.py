"""paired_folder, unpaired_folder and multidomain_folder: layouts, items and fields, directions, errors, a real fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gen_research.data.translation_folders import MultiDomainFolderData, PairedFolderData, UnpairedFolderData
from gen_research.errors import GenResearchError


def _save(path, value: int, size=(8, 8), grey: bool = False) -> None:
    """An image whose every pixel is ``value`` (it names the file in the tests), 8x8 unless told."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if grey else (*size, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def _value(image: torch.Tensor) -> int:
    """The grey level of a one-level image in [-1, 1]."""
    return int(round((float(image.mean()) + 1) * 127.5))


def _items(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


# ---- paired_folder --------------------------------------------------------------------------------------------------
def _pairs(root, count: int = 10) -> None:
    for i in range(count):  # A/i.jpg (value 10 i) pairs with B/i.png (value 10 i + 5); subfolders pair too
        sub = "sub/" if i == 0 else ""
        _save(root / "A" / f"{sub}{i}.png", 10 * i)
        _save(root / "B" / f"{sub}{i}.bmp", 10 * i + 5)


def test_paired_folder_pairs_files_by_name_without_extension(tmp_path):
    _pairs(tmp_path)
    dm = PairedFolderData(root=str(tmp_path), batch_size=4, grayscale_a=True)
    assert dm.source_shape == (1, 8, 8) and dm.image_shape == (3, 8, 8)
    dm.setup("fit")
    items = _items(dm.train_set) + _items(dm.val_set) + _items(dm.test_set)
    assert len(items) == 10 and sorted(_value(item["source"]) for item in items) == [10 * i for i in range(10)]
    for item in items:
        assert _value(item["target"]) == _value(item["source"]) + 5 and torch.equal(item["image"], item["target"])
        assert item["source"].shape == (1, 8, 8) and item["target"].shape == (3, 8, 8) and int(item["label"]) == 0
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == set(dm.batch_fields) == {"source", "target", "image", "label"}
    assert batch["source"].dtype == torch.float32 and batch["label"].dtype == torch.int64


def test_paired_folder_direction_btoa_swaps_the_roles(tmp_path):
    _pairs(tmp_path)
    dm = PairedFolderData(root=str(tmp_path), grayscale_a=True, direction="BtoA")
    assert dm.source_shape == (3, 8, 8) and dm.image_shape == (1, 8, 8)  # grayscale_a follows folder A
    dm.setup("fit")
    for item in _items(dm.train_set):
        assert _value(item["source"]) == _value(item["target"]) + 5 and item["target"].shape == (1, 8, 8)


def test_paired_folder_lists_unmatched_names_on_each_side(tmp_path):
    _pairs(tmp_path, count=2)
    for i in range(7):
        _save(tmp_path / "A" / f"lonely{i}.png", 1)
    _save(tmp_path / "B" / "orphan.png", 1)
    with pytest.raises(GenResearchError) as error:
        PairedFolderData(root=str(tmp_path))
    message = str(error.value)
    assert "7 images in A/ have no match in B/ (lonely0, lonely1, lonely2, lonely3, lonely4, ...)" in message
    assert "1 in B/ none in A/ (orphan)" in message and "lonely5" not in message and "\n" not in message


def test_paired_folder_errors_name_the_layout(tmp_path):
    _save(tmp_path / "A" / "0.png", 0)
    with pytest.raises(GenResearchError, match=r"no folder .*B'.*root/A/ and root/B/.*data.init_args.root"):
        PairedFolderData(root=str(tmp_path))
    _save(tmp_path / "B" / "0.png", 0, size=(6, 6))
    with pytest.raises(GenResearchError, match=r"different sizes \(A 8x8 vs B 6x6\)"):
        PairedFolderData(root=str(tmp_path))
    with pytest.raises(GenResearchError, match="direction must be one of AtoB, BtoA"):
        PairedFolderData(root=str(tmp_path), direction="AB")


def test_paired_folder_trains_a_tiny_translator_with_random_crops(tmp_path):
    import lightning.pytorch as pl

    from tests.families.paired import TinyTranslator

    class RecordBatches(pl.Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[str, dict]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.seen.append(("train", batch))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
            self.seen.append(("val", batch))

    _pairs(tmp_path, count=12)
    dm = PairedFolderData(root=str(tmp_path), batch_size=4, resize=10, random_crop=8, random_flip=True)
    model = TinyTranslator(image_shape=dm.image_shape, hidden=4)
    record = RecordBatches()
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=1, logger=False, callbacks=[record],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 and [kind for kind, _ in record.seen] == ["val", "train", "train"]
    for _, batch in record.seen:  # the model sees 8x8 crops of the 10x10 images (alignment: test_joint_crop.py)
        assert batch["source"].shape[1:] == batch["target"].shape[1:] == (3, 8, 8)
        assert torch.allclose(batch["target"], batch["source"] + 5 / 127.5, atol=1e-5)

# ---- unpaired_folder ------------------------------------------------------------------------------------------------
def _domains(root, a: int, b: int, test: tuple[int, int] | None = None) -> None:
    """A images have values 0..a-1 (grey files), B images 100.. (colour); test ones 50.. and 200.."""
    for i in range(a):
        _save(root / "trainA" / f"{i}.png", i, grey=True)
    for i in range(b):
        _save(root / "trainB" / f"{i}.png", 100 + i)
    if test:
        for i in range(test[0]):
            _save(root / "testA" / f"{i}.png", 50 + i, grey=True)
        for i in range(test[1]):
            _save(root / "testB" / f"{i}.png", 200 + i)


def test_unpaired_folder_lengths_and_coverage_without_test_folders(tmp_path):
    _domains(tmp_path, a=5, b=8)
    dm = UnpairedFolderData(root=str(tmp_path), grayscale_a=True, val_fraction=0.2, test_fraction=0.2, batch_size=2)
    assert dm.source_shape == (1, 8, 8) and dm.image_shape == (3, 8, 8) and dm.domain_names == ("A", "B")
    assert dm.joint_geometry is False  # A and B crop and flip independently (the reference's unaligned dataset)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 2)  # max(|A|, |B|) per split
    seen_a, seen_b = set(), set()
    for split in (dm.train_set, dm.val_set, dm.test_set):
        a_values = [_value(item["source"]) for item in _items(split)]
        b_values = [_value(item["image"]) for item in _items(split)]
        assert all(v < 5 for v in a_values) and all(100 <= v < 108 for v in b_values)
        seen_a |= set(a_values)
        seen_b |= set(b_values)
    assert seen_a == set(range(5)) and seen_b == set(range(100, 108))  # every image of both domains is served
    item = dm.train_set[0]
    assert (item["domain"], item["target_domain"], int(item["label"])) == (0, 1, 0)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == set(dm.batch_fields) and batch["domain"].dtype == torch.int64


def test_unpaired_folder_uses_test_folders_and_eval_direction_btoa(tmp_path):
    _domains(tmp_path, a=6, b=6, test=(2, 3))
    dm = UnpairedFolderData(root=str(tmp_path), grayscale_a=True, eval_direction="BtoA", val_fraction=0.2)
    dm.setup("fit")
    assert len(dm.test_set) == 3 and len(dm.train_set) + len(dm.val_set) == 6
    for item in _items(dm.test_set):  # B -> A: sources from testB, real images from testA
        assert item["source"].shape == (3, 8, 8) and 200 <= _value(item["source"]) < 203
        assert item["image"].shape == (1, 8, 8) and 50 <= _value(item["image"]) < 52
        assert (item["domain"], item["target_domain"]) == (1, 0)
    for item in _items(dm.val_set):
        assert (item["domain"], item["target_domain"]) == (1, 0) and _value(item["source"]) >= 100
    for item in _items(dm.train_set):  # training items always have an A source
        assert (item["domain"], item["target_domain"]) == (0, 1) and _value(item["source"]) < 6
    assert dm.image_shape == (3, 8, 8)  # always B's, whatever eval_direction


def test_unpaired_folder_direction_btoa_swaps_the_folders(tmp_path):
    _domains(tmp_path, a=4, b=4)
    dm = UnpairedFolderData(root=str(tmp_path), grayscale_a=True, direction="BtoA", val_fraction=0.0, test_fraction=0.0)
    assert dm.source_shape == (3, 8, 8) and dm.image_shape == (1, 8, 8)
    dm.setup("fit")
    assert len(dm.val_set) == 0 and all(_value(item["source"]) >= 100 for item in _items(dm.train_set))


def test_unpaired_folder_pairs_no_files_that_belong_together(tmp_path):
    # trainA/i and trainB/i share a name and a value: a loader pairing by index would show 16 true pairs
    for i in range(16):
        _save(tmp_path / "trainA" / f"{i:02d}.png", 10 * i)
        _save(tmp_path / "trainB" / f"{i:02d}.png", 10 * i)
    dm = UnpairedFolderData(root=str(tmp_path), val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    together = sum(_value(item["source"]) == _value(item["image"]) for item in _items(dm.train_set))
    assert together <= 3  # a seeded permutation: about one fixed point expected


def test_unpaired_folder_layout_errors(tmp_path):
    _domains(tmp_path, a=2, b=2)
    (tmp_path / "testA").mkdir()
    with pytest.raises(GenResearchError, match="has testA/ but not testB/; give both test folders or neither"):
        UnpairedFolderData(root=str(tmp_path))
    _save(tmp_path / "half" / "trainA" / "0.png", 0)
    with pytest.raises(GenResearchError, match=r"no folder .*half/trainB.*root/trainA/ and root/trainB/"):
        UnpairedFolderData(root=str(tmp_path / "half"))
    with pytest.raises(GenResearchError, match="eval_direction must be one of AtoB, BtoA"):
        UnpairedFolderData(root=str(tmp_path), eval_direction="back")


# ---- multidomain_folder ---------------------------------------------------------------------------------------------
def test_multidomain_folder_single_label_asks_for_every_other_domain(tmp_path):
    for d, name in enumerate(("blond", "brown", "dark")):
        for i in range(6):
            _save(tmp_path / name / f"{i}.png", 40 * d + i)
    dm = MultiDomainFolderData(root=str(tmp_path), val_fraction=0.25, test_fraction=0.25, batch_size=3)
    assert dm.domain_names == ("blond", "brown", "dark") and dm.num_domains == 3 and dm.multi_label is False
    assert dm.image_shape == dm.source_shape == (3, 8, 8) and dm.num_classes is None
    dm.setup("fit")
    for split in (dm.train_set, dm.val_set, dm.test_set):
        for k, item in enumerate(_items(split)):
            own = int(item["domain"])
            assert own == _value(item["image"]) // 40 and "source" not in item  # the image is the source
            assert int(item["target_domain"]) == (own + 1 + k % 2) % 3 != own and int(item["label"]) == 0
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == set(dm.batch_fields) and batch["domain"].dtype == batch["target_domain"].dtype == torch.int64


def _celeba_like(root, rows: list[str], header: str = "image_id,Black_Hair,Blond_Hair,Male") -> None:
    for i in range(6):
        _save(root / "img" / f"{i}.jpg", 30 * i)
    (root / "attrs.csv").write_text("\n".join([header, *rows]) + "\n")


def test_multidomain_folder_multi_label_csv_flips_one_attribute_in_turn(tmp_path):
    rows = [f"img/{i}.jpg,{1 if i % 2 else -1},{-1 if i % 2 else 1},{1 if i < 3 else 0}" for i in range(6)]
    _celeba_like(tmp_path, rows)
    dm = MultiDomainFolderData(root=str(tmp_path), attributes_csv="attrs.csv", attributes=["Blond_Hair", "Male"],
                               val_fraction=0.0, test_fraction=0.0)
    assert dm.multi_label is True and dm.domain_names == ("Blond_Hair", "Male") and dm.num_domains == 2
    dm.setup("fit")
    for k, item in enumerate(_items(dm.train_set)):
        i = _value(item["image"]) // 30  # which file
        own = torch.tensor([0.0 if i % 2 else 1.0, 1.0 if i < 3 else 0.0])
        assert item["domain"].dtype == torch.float32 and torch.equal(item["domain"], own)
        expected = own.clone()
        expected[k % 2] = 1 - expected[k % 2]
        assert torch.equal(item["target_domain"], expected)


def test_multidomain_folder_csv_errors(tmp_path):
    _celeba_like(tmp_path, [f"img/{i}.jpg,1,-1,1" for i in range(6)] + ["img/gone.jpg,1,1,1", "img/lost.jpg,1,1,1"])
    csv_path = str(tmp_path / "attrs.csv")
    with pytest.raises(GenResearchError, match="has no column Bald; its attribute columns are Black_Hair, Blond_Hair, Male"):
        MultiDomainFolderData(root=str(tmp_path), attributes_csv=csv_path, attributes=["Male", "Bald"])
    with pytest.raises(GenResearchError, match=r"2 images named in .* are not under the root \(first: .*gone.jpg"):
        MultiDomainFolderData(root=str(tmp_path), attributes_csv=csv_path, attributes=["Male"])
    with pytest.raises(GenResearchError, match="needs the columns that are the domains"):
        MultiDomainFolderData(root=str(tmp_path), attributes_csv=csv_path)
    (tmp_path / "bad.csv").write_text("image_id,Male\nimg/0.jpg,yes\n")
    with pytest.raises(GenResearchError, match=r"line 2: attribute values must be 1, -1 or 0, got \['yes'\]"):
        MultiDomainFolderData(root=str(tmp_path), attributes_csv="bad.csv", attributes=["Male"])


def test_multidomain_folder_needs_two_domain_subfolders(tmp_path):
    _save(tmp_path / "only" / "0.png", 0)
    with pytest.raises(GenResearchError, match="has 1 subfolders with images; one subfolder per domain needs at least 2"):
        MultiDomainFolderData(root=str(tmp_path))
