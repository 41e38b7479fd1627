"""All extractors: registered, one constructor shape; pixels: exact values, resize, names, errors."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import FeatureExtractor
from gen_research.evaluation.extractors import CLIPFeatures, ClassifierFeatures, InceptionFeatures, PixelFeatures
from gen_research.registry import FEATURES


def test_registered_with_uniform_constructor():
    assert {"pixels", "classifier", "inception", "clip"} <= set(FEATURES.names())
    for name, cls in [("pixels", PixelFeatures), ("classifier", ClassifierFeatures), ("inception", InceptionFeatures), ("clip", CLIPFeatures)]:
        assert FEATURES.get(name) is cls and issubclass(cls, FeatureExtractor)
        params = inspect.signature(cls.__init__).parameters
        assert params["weights"].default is None and params["resize"].default is None
        assert params["image_shape"].default is None and params["resize_mode"].default is None
        assert list(params)[1:5] == ["weights", "resize", "resize_mode", "image_shape"]


def test_pixels_values_name_and_key():
    x = torch.rand(4, 3, 6, 5) * 2 - 1
    extractor = PixelFeatures()
    out = extractor(x)
    assert set(out) == {"features"} and extractor.outputs == ("features",)
    assert torch.allclose(out["features"], ((x + 1) / 2).reshape(4, -1))
    assert extractor.name == "pixels" and extractor.num_features == 90 and extractor.num_logits is None
    assert PixelFeatures(image_shape=(3, 6, 5)).num_features == 90
    assert extractor.cache_key()["extractor"] == "pixels" and extractor.cache_key()["extractor_weights"] == "none"


def test_pixels_resize_is_clean_fid_resize_and_keyed():
    import numpy as np
    from cleanfid.resize import make_resizer

    x = torch.randint(0, 256, (2, 1, 16, 16)).float() / 127.5 - 1
    extractor = PixelFeatures(resize=4)
    features = extractor(x)["features"]
    resizer = make_resizer("PIL", False, "bicubic", (4, 4))  # clean-fid's "clean": PIL bicubic on float, RGB in
    as_uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    expected = torch.stack([torch.from_numpy(resizer(np.repeat(im.permute(1, 2, 0).numpy(), 3, 2))[..., 0]) for im in as_uint8])
    assert torch.equal(features, (expected / 255.0).reshape(2, 16))
    # Antialiasing (the filter widens 4x): each output is close to its 4x4 block mean (plain bilinear samples 4 pixels).
    blocks = F.avg_pool2d((x + 1) / 2, 4).reshape(2, 16)
    assert (features - blocks).abs().mean() < 0.05
    assert extractor.name == "pixels-4" and PixelFeatures(resize=8).name == "pixels-8" and extractor.resize_mode == "clean"
    assert PixelFeatures(resize=4, image_shape=(3, 32, 32)).num_features == 48
    assert extractor.cache_key() != PixelFeatures(resize=8).cache_key() != PixelFeatures().cache_key()
    constant = torch.full((1, 3, 10, 10), 0.5)  # 0.5 -> uint8 round(191.25) = 191
    assert torch.allclose(PixelFeatures(resize=3)(constant)["features"], torch.full((1, 27), 191 / 255))


def test_pixels_errors_and_frozen():
    with pytest.raises(GenResearchError, match="no weights"):
        PixelFeatures(weights="some.ckpt")
    with pytest.raises(GenResearchError, match="resize"):
        PixelFeatures(resize=0)
    extractor = PixelFeatures(image_shape=(1, 8, 8))
    with pytest.raises(GenResearchError, match="64"):
        extractor(torch.zeros(2, 1, 9, 9))
    extractor.train()
    assert not extractor.training
