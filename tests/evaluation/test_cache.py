"""ReferenceCache: round trip, one file per exact key, root selection, refusal of installed-code folders, corrupt
files, content checksum, format version; and the whole reference set in the key, through reference_outputs and the
evaluation callback on real image folders (8x8 digits)."""

import json
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch

import gen_research
from gen_research.errors import GenResearchError
from gen_research.evaluation.cache import CACHE_ENV, FORMAT_VERSION, ReferenceCache, key_digest, outputs_digest

KEY = {
    "dataset": "mnist5k",
    "split": "test",
    "num_images": "500",
    "preprocessing": "resize=none",
    "extractor": "classifier-mnist5k",
    "extractor_weights": "sha256:abc",
    "extractor_resize": "none",
    "extractor_input": "[-1,1] as is",
    "fingerprint": "0123456789abcdef",
}


def outputs():
    torch.manual_seed(0)
    return {"features": torch.randn(5, 7), "logits": torch.randn(5, 3)}


def test_round_trip_and_sidecar(tmp_path):
    cache = ReferenceCache(tmp_path)
    assert cache.load(KEY) is None
    saved = outputs()
    path = cache.save(KEY, saved)
    assert path.parent == tmp_path and path.name.startswith("classifier-mnist5k_mnist5k_") and key_digest(KEY) in path.name
    loaded = cache.load(KEY)
    assert set(loaded) == {"features", "logits"} and all(torch.equal(loaded[k], saved[k]) for k in saved)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["key_parts"] == KEY and sidecar["outputs"] == {"features": [5, 7], "logits": [5, 3]}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])  # no temp files left
    # Non-string values are keyed by their text; key order does not matter.
    assert cache.path_for({**KEY, "num_images": 500}) == path == cache.path_for(dict(reversed(list(KEY.items()))))


@pytest.mark.parametrize("part", sorted(KEY))
def test_every_key_part_changes_the_file(tmp_path, part):
    cache = ReferenceCache(tmp_path)
    cache.save(KEY, outputs())
    changed = {**KEY, part: KEY[part] + "x"}
    assert cache.path_for(changed) != cache.path_for(KEY)
    assert cache.load(changed) is None
    assert cache.path_for({k: v for k, v in KEY.items() if k != part}) != cache.path_for(KEY)  # dropping a part too


def test_root_from_argument_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert ReferenceCache().root == (tmp_path / "env").resolve()
    assert ReferenceCache(tmp_path / "arg").root == (tmp_path / "arg").resolve()
    path = ReferenceCache().save(KEY, outputs())
    assert path.parent == (tmp_path / "env").resolve()
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ReferenceCache().root == (tmp_path / "home" / ".cache" / "gen_research" / "reference").resolve()


def test_installed_code_folders_are_refused(tmp_path):
    for root in (Path(sysconfig.get_paths()["purelib"]) / "refcache", Path(gen_research.__file__).parent / "cache",
                 tmp_path / "venv" / "lib" / "site-packages" / "x"):
        with pytest.raises(GenResearchError, match=CACHE_ENV):
            ReferenceCache(root)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_key", "not_tensors"])
def test_corrupt_file_is_ignored_with_one_warning(tmp_path, damage):
    cache = ReferenceCache(tmp_path)
    path = cache.save(KEY, outputs())
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage")
    elif damage == "other_key":
        torch.save({"format": FORMAT_VERSION, "key_parts": {**KEY, "split": "train"}, "outputs": outputs(),
                    "sha256": outputs_digest(outputs())}, path)
    else:
        torch.save({"format": FORMAT_VERSION, "key_parts": KEY, "outputs": {"features": [1, 2]}}, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load(KEY) is None
        assert cache.load(KEY) is None
    assert len(caught) == 1 and "recomputing" in str(caught[0].message)
    # Recomputed outputs overwrite the damaged file.
    cache.save(KEY, outputs())
    assert torch.equal(cache.load(KEY)["features"], outputs()["features"])


def test_other_format_version_is_recomputed(tmp_path):
    cache = ReferenceCache(tmp_path)
    path = cache.save(KEY, outputs())
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format": "1"}, path)  # a file written by an older gen_research
    with pytest.warns(RuntimeWarning, match=rf"{path.name}.*format version '1'.*recomputing"):
        assert cache.load(KEY) is None
    cache.save(KEY, outputs())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cache.load(KEY)["features"], outputs()["features"])


def test_checksum_is_stored_in_file_and_sidecar(tmp_path):
    path = ReferenceCache(tmp_path).save(KEY, outputs())
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT_VERSION and payload["sha256"] == outputs_digest(outputs())
    assert json.loads(path.with_suffix(".json").read_text())["outputs_sha256"] == payload["sha256"]
    changed = outputs()
    changed["features"][4, 6] = torch.nextafter(changed["features"][4, 6], torch.tensor(10.0))  # one ulp, last row
    assert outputs_digest(changed) != payload["sha256"]


# ---- the cache in use: reference_outputs with real image folders ------------------------------------------------
import os  # noqa: E402
import types  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import gen_research.evaluation.extractors  # noqa: E402,F401  (registration)
import gen_research.evaluation.specs  # noqa: E402,F401
from gen_research.evaluation import sources  # noqa: E402
from gen_research.evaluation.evaluator import Evaluator, reference_outputs  # noqa: E402
from gen_research.registry import FEATURES  # noqa: E402

DIGITS = (load_digits().images * (255 / 16)).astype(np.uint8)


def write_digits(folder, block):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(block):
        Image.fromarray(image, mode="L").save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture()
def folders(tmp_path):
    return write_digits(tmp_path / "real", DIGITS[:120]), write_digits(tmp_path / "fake", DIGITS[200:320])


def folder_set(folder):
    return sources.folder_dataset(sources.folder_images(str(folder), "test"), None, True)


def fid(real_folder, fake_folder, cache):
    """FID on pixels of two folders, the reference through reference_outputs; also how many reference batches
    went through the extractor (0: read from the cache)."""
    real_set, fake_set = folder_set(real_folder), folder_set(fake_folder)
    evaluator = Evaluator(FEATURES.get("pixels")(image_shape=(1, 8, 8)), ["fid"])
    extract, calls = evaluator.extract, []
    evaluator.extract = lambda images: calls.append(len(images)) or extract(images)
    key = {"dataset": f"folder:{real_folder}", "split": "all", "num_images": len(real_set), "preprocessing": "none"}
    fingerprint = sources.dataset_fingerprint(real_set) if cache is not None else None
    reals = reference_outputs(evaluator, lambda: sources.image_batches(real_set, 16), key, cache, fingerprint=fingerprint)
    evaluator.extract = extract
    evaluator.add_outputs(reals, "real")
    for images in sources.image_batches(fake_set, 16):
        evaluator.add_images(images, "fake")
    return evaluator.compute()["fid/pixels"], len(calls), reals


def flip_bit(path, name, bit):
    """Flip one bit of the largest stored value of tensor ``name`` inside a torch.save zip file (stored uncompressed)."""
    payload = torch.load(path, weights_only=True)
    tensor = payload["outputs"][name]
    element = int(tensor.flatten().abs().argmax())
    with zipfile.ZipFile(path) as archive:  # the one data record of exactly this tensor's size
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size == tensor.numel() * tensor.element_size())
    raw = bytearray(path.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(raw[header + 26 : header + 28], "little") + int.from_bytes(raw[header + 28 : header + 30], "little")
    raw[start + element * 4 + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("bit", [0, 30], ids=["mantissa", "exponent"])
def test_flipped_bit_is_detected_recomputed_and_rewritten(folders, tmp_path, bit):
    real, fake = folders
    uncached, _, _ = fid(real, fake, None)
    cache = ReferenceCache(tmp_path / "cache")
    first, computed, _ = fid(real, fake, cache)
    assert first == uncached and computed == 8  # 120 images in batches of 16
    (path,) = (tmp_path / "cache").glob("*.pt")
    flip_bit(path, "features", bit)
    with pytest.warns(RuntimeWarning, match=rf"{path.name}.*damaged.*recomputing"):
        value, computed, _ = fid(real, fake, ReferenceCache(tmp_path / "cache"))
    assert value == uncached and computed == 8
    with warnings.catch_warnings():  # rewritten: the next run reads it back, silently and with the same value
        warnings.simplefilter("error")
        assert fid(real, fake, ReferenceCache(tmp_path / "cache"))[:2] == (uncached, 0)


def test_unchanged_set_hits_and_an_edited_later_image_misses(folders, tmp_path):
    real, fake = folders
    cache = ReferenceCache(tmp_path / "cache")
    first, computed, reals = fid(real, fake, cache)
    assert computed == 8
    os.utime(real / "0100.png", ns=(1, 1))  # touched, same bytes: still a hit
    again, computed, _ = fid(real, fake, cache)
    assert (again, computed) == (first, 0)
    Image.fromarray(DIGITS[500], mode="L").save(real / "0100.png")  # an image of the 7th batch, not the first
    changed, computed, new_reals = fid(real, fake, cache)
    assert computed == 8 and changed != first and len(list((tmp_path / "cache").glob("*.pt"))) == 2
    assert torch.equal(new_reals["features"][:100], reals["features"][:100])
    assert not torch.equal(new_reals["features"][100], reals["features"][100])
    assert fid(real, fake, cache)[:2] == (changed, 0)


def test_fingerprints_cover_every_item_of_each_kind_of_dataset(folders):
    from torch.utils.data import Subset, TensorDataset

    from gen_research.data.datasets import TensorImageDataset

    real, _ = folders
    files = Subset(Subset(folder_set(real), list(range(100, 0, -1))), list(range(50)))  # as a data module nests them
    memory = TensorImageDataset(torch.from_numpy(DIGITS[:120, None].copy()), torch.arange(120) % 10)
    generic = TensorDataset(torch.from_numpy(DIGITS[:120, None].astype(np.float32)))
    before = [sources.dataset_fingerprint(d) for d in (files, memory, generic)]
    assert sources.dataset_fingerprint(memory, 119) != before[1]  # fewer items: another set
    Image.fromarray(DIGITS[600], mode="L").save(real / "0051.png")  # item 49 of `files`, its last one
    memory.images[119, 0, 7, 7] += 1
    memory_labels = sources.dataset_fingerprint(memory)
    generic.tensors[0][119, 0, 7, 7] += 1
    after = [sources.dataset_fingerprint(d) for d in (files, memory, generic)]
    assert all(a != b for a, b in zip(after, before))
    memory.labels[3] = 9 - memory.labels[3]
    assert sources.dataset_fingerprint(memory) != memory_labels
    Image.fromarray(DIGITS[600], mode="L").save(real / "0000.png")  # not one of the 50 items used
    assert sources.dataset_fingerprint(files) == after[0]


class TinyGenerator(torch.nn.Module):
    """Stands in for a model with a prior: samples are seeded noise, what the callback needs of a model."""

    conditioning_classes = None  # the contract's Generates: unconditional
    device = torch.device("cpu")

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def sample(self, count, labels=None, generator=None):
        return (torch.randn(count, 1, 8, 8, generator=generator) * self.scale).clamp(-1, 1)


def test_evaluation_callback_keys_the_whole_reference_split(tmp_path):
    from gen_research.training.callbacks.evaluation import EvaluationCallback
    from gen_research.data.folder import ImageFolderData

    root = write_digits(tmp_path / "data", DIGITS[:200])
    datamodule = ImageFolderData(str(root), grayscale=True, val_fraction=0.4, test_fraction=0.1)
    datamodule.setup("fit")
    trainer = types.SimpleNamespace(datamodule=datamodule, global_rank=0, world_size=1)

    def run():
        callback = EvaluationCallback(metrics="fid", num_samples=64, batch_size=16, cache_dir=str(tmp_path / "cache"))
        return callback.evaluate(trainer, TinyGenerator())["fid/pixels"]

    first = run()
    assert run() == first and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    val_paths = [datamodule.val_set.dataset.paths[i] for i in datamodule.val_set.indices]
    Image.fromarray(DIGITS[700], mode="L").save(val_paths[-1])  # the last validation image (last batch)
    changed = run()
    assert changed != first and len(list((tmp_path / "cache").glob("*.pt"))) == 2
