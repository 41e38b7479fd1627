"""The classifier extractor: loads the EMA weights of a `classifier` checkpoint, its name, shape checks, errors."""

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.evaluation.extractors import ClassifierFeatures
from gen_research.models.classifier import Classifier


def test_outputs_are_the_checkpoint_models_features_and_logits(classifier_ckpt, digits8):
    x, y = digits8
    extractor = ClassifierFeatures(weights=str(classifier_ckpt), image_shape=(1, 8, 8))
    assert extractor.name == "classifier-digits8" and extractor.outputs == ("features", "logits")
    assert extractor.num_features == 24 and extractor.num_logits == 10
    out = extractor(x[1500:])
    assert out["features"].shape == (297, 24) and out["logits"].shape == (297, 10)
    reference = Classifier.load_from_checkpoint(classifier_ckpt, map_location="cpu").eval()
    with torch.no_grad():
        assert torch.allclose(out["features"], reference.features(x[1500:]), atol=1e-6)
        assert torch.allclose(out["logits"], reference(x[1500:]), atol=1e-6)
    accuracy = (out["logits"].argmax(1) == y[1500:]).float().mean().item()
    assert accuracy > 0.85, accuracy  # held-out digits; chance is 0.1
    assert torch.equal(extractor(x[:7])["features"], extractor(x[:7])["features"])  # eval mode: deterministic


def test_uses_the_ema_state_dict_not_the_training_weights(classifier_ckpt):
    checkpoint = torch.load(classifier_ckpt, map_location="cpu", weights_only=False)
    extractor = ClassifierFeatures(weights=str(classifier_ckpt))
    loaded = extractor.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in checkpoint["state_dict"].items())
    assert not torch.equal(checkpoint["current_model_state"]["head.weight"], checkpoint["state_dict"]["head.weight"])
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.model.training


def test_cache_key_hashes_the_weights(classifier_ckpt, tmp_path):
    key = ClassifierFeatures(weights=str(classifier_ckpt)).cache_key()
    assert key["extractor"] == "classifier-digits8" and key["extractor_weights"].startswith("sha256:")
    checkpoint = torch.load(classifier_ckpt, map_location="cpu", weights_only=False)
    checkpoint["state_dict"]["head.bias"] = checkpoint["state_dict"]["head.bias"] + 1e-3
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    assert ClassifierFeatures(weights=str(other)).cache_key()["extractor_weights"] != key["extractor_weights"]


def test_resize_to_the_classifiers_side_reads_larger_images_as_resized_ones(classifier_ckpt, digits8):
    x, y = digits8
    import numpy as np
    from cleanfid.resize import make_resizer

    extractor = ClassifierFeatures(weights=str(classifier_ckpt), resize=8, image_shape=(1, 16, 16))
    assert extractor.resize_mode == "clean" and extractor.name == "classifier-digits8"  # the default mode keeps the name
    larger = torch.nn.functional.interpolate(x[1500:], size=(16, 16), mode="bilinear", align_corners=False)
    # Reference: the images as uint8 files, resized by clean-fid's "clean" resizer (RGB in, first channel kept).
    resizer = make_resizer("PIL", False, "bicubic", (8, 8))
    as_uint8 = ((larger + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    back = torch.stack([torch.from_numpy(resizer(np.repeat(im.permute(1, 2, 0).numpy(), 3, 2))[..., :1]).permute(2, 0, 1)
                        for im in as_uint8]) / 127.5 - 1
    plain = ClassifierFeatures(weights=str(classifier_ckpt))  # no resize: reads [-1, 1] floats as they are
    assert torch.equal(extractor(larger)["logits"], plain(back)["logits"])
    accuracy = (extractor(larger)["logits"].argmax(1) == y[1500:]).float().mean().item()
    assert accuracy > 0.8, accuracy  # the digits survive the round trip: still read as themselves
    key = extractor.cache_key()
    assert key["extractor_resize"].startswith("8 (clean-fid 'clean'") and key["extractor_resize_mode"] == "clean"
    assert plain.cache_key()["extractor_resize"] == "none" and plain.cache_key()["extractor_resize_mode"] == "none"
    legacy = ClassifierFeatures(weights=str(classifier_ckpt), resize=8, resize_mode="legacy_pytorch")
    assert legacy.name == "classifier-digits8-legacy_pytorch" and legacy.cache_key()["extractor_resize_mode"] == "legacy_pytorch"
    assert not torch.equal(legacy(larger)["logits"], extractor(larger)["logits"])  # bilinear without antialiasing differs


def test_errors(classifier_ckpt, tmp_path):
    with pytest.raises(GenResearchError, match="classifier_mnist5k.yaml"):
        ClassifierFeatures()
    with pytest.raises(GenResearchError, match="not found.*classifier_mnist5k.yaml"):
        ClassifierFeatures(weights=str(tmp_path / "nope.ckpt"))
    with pytest.raises(GenResearchError, match="reads 8x8 images: resize=32 must be 8"):
        ClassifierFeatures(weights=str(classifier_ckpt), resize=32)
    extractor = ClassifierFeatures(weights=str(classifier_ckpt))
    with pytest.raises(GenResearchError, match=r"\(1, 8, 8\).*\(1, 28, 28\)"):
        extractor(torch.zeros(2, 1, 28, 28))
    with pytest.raises(GenResearchError, match=r"\(3, 8, 8\)"):
        ClassifierFeatures(weights=str(classifier_ckpt), image_shape=(3, 8, 8))
    foreign = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "gen_research.models.autoencoder.vae.VAE"}}, foreign)
    with pytest.raises(GenResearchError, match="not a checkpoint of the classifier"):
        ClassifierFeatures(weights=str(foreign))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(GenResearchError, match="cannot read checkpoint"):
        ClassifierFeatures(weights=str(garbage))
