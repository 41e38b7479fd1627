"""ReferenceCache: round trip, one file per exact key, root selection, refusal of installed-code folders, corrupt files."""

import json
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch

import gen_research
from gen_research.errors import GenResearchError
from gen_research.metrics.cache import CACHE_ENV, ReferenceCache, key_digest

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
        torch.save({"format": "1", "key_parts": {**KEY, "split": "train"}, "outputs": outputs()}, path)
    else:
        torch.save({"format": "1", "key_parts": KEY, "outputs": {"features": [1, 2]}}, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load(KEY) is None
        assert cache.load(KEY) is None
    assert len(caught) == 1 and "recomputing" in str(caught[0].message)
    # Recomputed outputs overwrite the damaged file.
    cache.save(KEY, outputs())
    assert torch.equal(cache.load(KEY)["features"], outputs()["features"])
