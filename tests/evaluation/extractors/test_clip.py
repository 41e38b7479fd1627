"""The clip extractor on a tiny CLIPModel saved to a temp folder: embeddings, preprocessing, name, key, errors."""

import json
import os

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.evaluation.extractors import CLIPFeatures
from gen_research.evaluation.extractors.clip import CLIP_MEAN, CLIP_STD

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=99,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    torch.manual_seed(0)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


@pytest.fixture(scope="module")
def clip_folders(tmp_path_factory):
    """(model, folder without a processor config, folder with one)."""
    from transformers import CLIPImageProcessor

    model = tiny_clip()
    root = tmp_path_factory.mktemp("clip")
    bare, full = root / "tiny-clip", root / "tiny-clip-proc"
    model.save_pretrained(bare)
    model.save_pretrained(full)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(full)
    return model, bare, full


def normalise(x01, mean, std):
    return (x01 - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None]


def test_embeddings_equal_get_image_features(clip_folders):
    model, bare, _ = clip_folders
    extractor = CLIPFeatures(weights=str(bare))
    assert extractor.name == "clip-tiny-clip" and extractor.num_features == 16 and extractor.outputs == ("features",)
    torch.manual_seed(1)
    # uint8-valued and already at the model's size: the quantisation and the (identity) resize change nothing,
    # preprocessing is only the normalisation.
    x = torch.randint(0, 256, (3, 3, 32, 32)).float() / 127.5 - 1
    features = extractor(x)["features"]
    with torch.no_grad():
        reference = model.get_image_features(pixel_values=normalise((x + 1) / 2, CLIP_MEAN, CLIP_STD))
    reference = getattr(reference, "pooler_output", reference)  # transformers 5: an output object
    assert features.shape == (3, 16) and torch.allclose(features, reference, atol=1e-5)
    assert not torch.allclose(features.norm(dim=1), torch.ones(3))  # raw projection, not L2-normalised
    grey = x[:, :1]
    assert torch.allclose(extractor(grey)["features"], extractor(grey.expand(-1, 3, -1, -1))["features"])


def test_preprocessing_matches_the_hf_image_processor(clip_folders):
    from transformers import CLIPImageProcessor

    model, _, full = clip_folders
    extractor = CLIPFeatures(weights=str(full))
    torch.manual_seed(2)
    x = (torch.randint(0, 256, (2, 3, 48, 40)).float() / 127.5 - 1)  # non-square, larger than 32: resize + crop
    processor = CLIPImageProcessor.from_pretrained(str(full))
    images = [((img.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for img in x]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    ours = extractor.preprocess(x)
    assert ours.shape == expected.shape == (2, 3, 32, 32)
    # Both resize with bicubic PIL-style filters; transformers' (torchvision on uint8) clips and rounds between its two
    # passes, clean-fid's float "F" mode does not: random noise is the worst case for that (up to ~10 grey levels).
    assert (ours - expected).abs().mean() < 0.02
    with torch.no_grad():
        reference = model.get_image_features(pixel_values=expected)
    reference = getattr(reference, "pooler_output", reference)
    assert torch.allclose(extractor(x)["features"], reference, atol=0.05 * reference.abs().mean().item())


def test_processor_config_is_used_and_keyed(clip_folders, tmp_path):
    model, bare, _ = clip_folders
    custom = tmp_path / "custom"
    model.save_pretrained(custom)
    (custom / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": 32, "crop_size": 32}))
    extractor = CLIPFeatures(weights=str(custom))
    x = torch.randint(0, 256, (2, 3, 32, 32)).float() / 127.5 - 1
    assert torch.allclose(extractor.preprocess(x), x, atol=1e-6)  # mean=std=0.5 maps [0, 1] back to [-1, 1]
    assert torch.allclose(extractor.preprocess(x + 0.003), x, atol=1e-6)  # every input is quantised to uint8 first
    key, bare_key = extractor.cache_key(), CLIPFeatures(weights=str(bare)).cache_key()
    assert key["extractor_weights"] == bare_key["extractor_weights"] and key["extractor_weights"].startswith("sha256:")  # same weights
    assert key["extractor_input"] != bare_key["extractor_input"] and key["extractor"] == "clip-custom"


def test_errors_and_frozen(clip_folders, tmp_path):
    _, bare, _ = clip_folders
    with pytest.raises(GenResearchError, match="needs weights"):
        CLIPFeatures()
    with pytest.raises(GenResearchError, match="no CLIP model folder"):
        CLIPFeatures(weights=str(tmp_path / "missing"))
    with pytest.raises(GenResearchError, match="resize"):
        CLIPFeatures(weights=str(bare), resize=224)
    extractor = CLIPFeatures(weights=str(bare))
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.vision_model.training


def test_resize_modes_name_key_and_errors(clip_folders, tmp_path):
    from gen_research.evaluation.extractors.resize import resize_images

    model, bare, _ = clip_folders
    default, legacy = CLIPFeatures(weights=str(bare)), CLIPFeatures(weights=str(bare), resize_mode="legacy_pytorch")
    assert default.resize_mode == "clean" and CLIPFeatures(weights=str(bare), resize_mode="clean").name == default.name == "clip-tiny-clip"
    assert legacy.name == "clip-tiny-clip-legacy_pytorch" and legacy.cache_key()["extractor_resize_mode"] == "legacy_pytorch"
    assert default.cache_key()["extractor_resize_mode"] == "clean" and default.cache_key() != legacy.cache_key()
    x = torch.randint(0, 256, (2, 1, 40, 48)).float() / 127.5 - 1  # grey, shortest edge 40 -> 32: 32x38, crop 32x32
    expected = resize_images(x, (32, 38), "legacy_pytorch").expand(-1, 3, -1, -1)[..., 3:35] / 255
    assert torch.allclose(legacy.preprocess(x), normalise(expected, CLIP_MEAN, CLIP_STD), atol=1e-6)
    no_resize = tmp_path / "no-resize"
    model.save_pretrained(no_resize)
    (no_resize / "preprocessor_config.json").write_text(json.dumps({"do_resize": False, "crop_size": 32}))
    assert CLIPFeatures(weights=str(no_resize)).resize_mode is None
    assert CLIPFeatures(weights=str(no_resize)).cache_key()["extractor_resize_mode"] == "none"
    with pytest.raises(GenResearchError, match="no resize happens.*do_resize is false"):
        CLIPFeatures(weights=str(no_resize), resize_mode="clean")
    with pytest.raises(GenResearchError, match="clip: unknown resize_mode 'PIL'.*clean, legacy_tensorflow, legacy_pytorch"):
        CLIPFeatures(weights=str(bare), resize_mode="PIL")
