"""The dinov2 extractor on randomly initialised DINOv2 ViT-B/14 and ViT-L/14 of the published configs (the real
weights cannot be downloaded here): loading, names from the weights hash, dgm-eval's preprocessing, features equal to
the torch.hub model's CLS token (its forward written from facebookresearch/dinov2's source) and to transformers'
``pooler_output``, one-line errors, the cache key, and FID of a set against itself.
"""

import copy
import hashlib
import json
import math
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gen_research.errors import GenResearchError
from gen_research.evaluation.extractors import DINOv2Features, dinov2
from gen_research.evaluation.extractors.dinov2 import COMMON, ENV_VAR, PUBLISHED

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def random_dinov2(arch: str, seed: int):
    """A Dinov2Model of the published ``arch`` config with seeded random weights (non-trivial norms, layer scales and
    position table, so that every part changes the output)."""
    from transformers import Dinov2Config, Dinov2Model
    from transformers.initialization import no_init_weights

    with no_init_weights():  # transformers' own init of ViT-L takes ~30 s here; fill the tensors directly instead
        model = Dinov2Model(Dinov2Config(**COMMON, **PUBLISHED[arch]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("lambda1"):
                param.copy_(0.2 + 0.8 * torch.rand(param.shape, generator=generator))
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            elif name.endswith("position_embeddings"):
                param.copy_(0.1 * noise)
            else:
                param.copy_(0.02 * noise)
    return model.eval()


def save(model, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
    return folder


def file_sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def vitb(tmp_path_factory):
    model = random_dinov2("vitb14", 0)
    return model, save(model, tmp_path_factory.mktemp("dinov2") / "vitb14")


@pytest.fixture(scope="module")
def extractor(vitb):
    return DINOv2Features(weights=str(vitb[1]), verify_hash=False)


def uint8_images(seed: int, shape) -> torch.Tensor:
    """[-1, 1] images that came from uint8 data (as images read from files)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=generator).float() / 127.5 - 1


def hub_cls_token(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """``DinoVisionTransformer.forward_features(x)["x_norm_clstoken"]`` of facebookresearch/dinov2 (hub defaults:
    interpolate_offset 0.1, no antialias, MLP blocks with layer scale), written from its source with the tensors of a
    transformers Dinov2Model: what dgm-eval's ``DINOv2Encoder`` returns (the hub model's head is the identity)."""
    emb, dim, heads = model.embeddings, model.config.hidden_size, model.config.num_attention_heads
    conv = emb.patch_embeddings.projection
    x = F.conv2d(pixel_values, conv.weight, conv.bias, stride=14).flatten(2).transpose(1, 2)  # PatchEmbed
    x = torch.cat((emb.cls_token.expand(len(x), -1, -1), x), dim=1)
    pos = emb.position_embeddings.float()  # interpolate_pos_encoding(x, w, h)
    n = pos.shape[1] - 1
    w0, h0 = pixel_values.shape[2] // 14 + 0.1, pixel_values.shape[3] // 14 + 0.1
    side = int(math.sqrt(n))
    patch = F.interpolate(pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
                          scale_factor=(w0 / side, h0 / side), mode="bicubic", antialias=False)
    x = x + torch.cat((pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)
    for layer in model.encoder.layer:  # NestedTensorBlock: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))
        a = layer.attention
        h = F.layer_norm(x, (dim,), layer.norm1.weight, layer.norm1.bias, 1e-6)
        q, k, v = (F.linear(h, p.weight, p.bias).reshape(len(h), -1, heads, dim // heads).transpose(1, 2)
                   for p in (a.q_proj, a.k_proj, a.v_proj))
        attention = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(len(h), -1, dim)
        x = x + layer.layer_scale1.lambda1 * F.linear(out, a.o_proj.weight, a.o_proj.bias)
        h = F.layer_norm(x, (dim,), layer.norm2.weight, layer.norm2.bias, 1e-6)
        h = F.linear(F.gelu(F.linear(h, layer.mlp.fc1.weight, layer.mlp.fc1.bias)), layer.mlp.fc2.weight, layer.mlp.fc2.bias)
        x = x + layer.layer_scale2.lambda1 * h
    return F.layer_norm(x, (dim,), model.layernorm.weight, model.layernorm.bias, 1e-6)[:, 0]


def dgm_eval_clean_resize(images: torch.Tensor) -> torch.Tensor:
    """dgm-eval's ``pil_resize`` (its --clean_resize path) + Normalize, on the uint8 RGB images behind ``images``."""
    from PIL import Image

    uint8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    uint8 = uint8.expand(-1, 3, -1, -1) if uint8.shape[1] == 1 else uint8
    out = []
    for image in uint8.numpy().astype(np.float32):  # [3, H, W]
        planes = [np.asarray(Image.fromarray(plane).resize((224, 224), resample=Image.BICUBIC)).clip(0, 255) for plane in image]
        out.append(torch.from_numpy(np.stack(planes)) / 255)
    return (torch.stack(out) - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def test_vitb14_name_key_and_features_equal_the_hub_model_and_pooler_output(extractor, vitb):
    model, folder = vitb
    sha = file_sha256(folder / "model.safetensors")
    assert extractor.name == f"dinov2-vitb14-{sha[:8]}" and extractor.num_features == 768 and extractor.outputs == ("features",)
    key = extractor.cache_key()
    assert key["extractor_weights"] == f"sha256:{sha}" and key["extractor_resize_mode"] == "clean" and key["extractor"] == extractor.name
    x = uint8_images(1, (2, 3, 224, 224))
    features = extractor(x)["features"]
    pixel_values = extractor.preprocess(x)
    assert features.shape == (2, 768) and features.dtype == torch.float32 and not torch.allclose(features[0], features[1])
    with torch.no_grad():
        hub = hub_cls_token(model, pixel_values)  # model: the untouched 37x37 table, resampled the hub's way inside
        assert torch.allclose(features, hub, atol=1e-4), (features - hub).abs().max()
        # transformers' own resampling (size=(16, 16)) gives other positions and so other features ...
        default = model(pixel_values=pixel_values[:1]).pooler_output
        assert (default - hub[:1]).abs().max() > 1e-2
        # ... and with the hub's 16x16 table in place, Dinov2Model's pooler_output is the extractor's output.
        direct = copy.deepcopy(model)
        direct.embeddings.position_embeddings.data = extractor.model.embeddings.position_embeddings.data.clone()
        assert torch.allclose(direct(pixel_values=pixel_values[:1]).pooler_output, features[:1], atol=1e-5)


def test_preprocessing_is_dgm_eval_and_grey_rgb_odd_sizes(extractor):
    import torchvision.transforms as T
    from PIL import Image
    from sklearn.datasets import load_sample_images

    grey, rgb = uint8_images(2, (2, 1, 28, 28)), uint8_images(3, (2, 3, 37, 45))
    for images in (grey, rgb):
        ours, reference = extractor.preprocess(images), dgm_eval_clean_resize(images)
        assert ours.shape == (2, 3, 224, 224) and torch.allclose(ours, reference, atol=1e-5)
    # dgm-eval's default transform (torchvision Resize(BICUBIC) of the PIL image: Pillow's bicubic on uint8, each pass
    # rounded and clipped) is close to clean on a photo: measured mean 0.32, max 5.4 (0..255 units) on this crop.
    photo = np.ascontiguousarray(load_sample_images().images[0][100:164, 200:264])
    default = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(), T.Normalize(MEAN, STD)])(Image.fromarray(photo))
    ours = extractor.preprocess(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1)[0]
    difference = ((ours - default) * torch.tensor(STD)[:, None, None]).abs() * 255
    assert 0.1 < difference.mean() < 0.5 and difference.max() < 8
    # Grey is RGB with equal channels; features do not depend on the batch it comes in.
    assert torch.allclose(extractor(grey[:1])["features"], extractor(grey[:1].expand(-1, 3, -1, -1))["features"], atol=1e-6)
    batch, single = extractor(rgb)["features"], extractor(rgb[1:])["features"]
    assert torch.allclose(batch[1:], single, atol=1e-4) and torch.equal(single, extractor(rgb[1:])["features"])  # deterministic


def test_official_hash_gives_the_plain_name_other_weights_a_suffix_and_a_warning(vitb, monkeypatch):
    folder = vitb[1]
    sha = file_sha256(folder / "model.safetensors")
    with pytest.warns(UserWarning, match=f"not the published facebook/dinov2-base.*dinov2-vitb14-{sha[:8]}"):
        DINOv2Features(weights=str(folder))
    monkeypatch.setattr(dinov2, "OFFICIAL_SHA256", {sha: "vitb14"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for published weights
        official = DINOv2Features(weights=str(folder), resize_mode="legacy_pytorch")
    assert official.name == "dinov2-vitb14-legacy_pytorch" and official.cache_key()["extractor_resize_mode"] == "legacy_pytorch"
    monkeypatch.setattr(dinov2, "OFFICIAL_SHA256", {sha: "vitl14"})  # a hash listed for another architecture
    assert DINOv2Features(weights=str(folder), verify_hash=False).name == f"dinov2-vitb14-{sha[:8]}"


def test_env_var_hub_cache_folder_and_shards(vitb, extractor, tmp_path, monkeypatch):
    model, folder = vitb
    cache = tmp_path / "models--facebook--dinov2-base"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text("abc123\n")
    shutil.copytree(folder, cache / "snapshots" / "abc123", copy_function=os.symlink)
    monkeypatch.setenv(ENV_VAR, str(cache))
    assert DINOv2Features(verify_hash=False).weights_sha256 == file_sha256(folder / "model.safetensors")
    sharded = tmp_path / "sharded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(sharded, max_shard_size="100MB")
    shards = sorted(set(json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) > 1
    lines = "".join(f"{name} {file_sha256(sharded / name)}\n" for name in shards)
    from_shards = DINOv2Features(weights=str(sharded), verify_hash=False)
    assert from_shards.weights_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert from_shards.name == f"dinov2-vitb14-{from_shards.weights_sha256[:8]}" != extractor.name
    x = uint8_images(4, (1, 3, 32, 32))
    assert torch.allclose(from_shards(x)["features"], extractor(x)["features"], atol=1e-6)


def one_line(call, match: str) -> str:
    with pytest.raises(GenResearchError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


def test_errors_are_one_line(vitb, tmp_path, monkeypatch):
    from gen_research.registry import FEATURES

    assert FEATURES.get("dinov2") is DINOv2Features
    model, folder = vitb
    monkeypatch.delenv(ENV_VAR, raising=False)
    message = one_line(lambda: DINOv2Features(), "needs weights")
    assert "snapshot_download('facebook/dinov2-large'" in message and "--feature-weights" in message
    one_line(lambda: DINOv2Features(weights=str(tmp_path / "missing")), "no DINOv2 model folder.*nothing is downloaded")
    config = json.loads((folder / "config.json").read_text())
    for change, match in (({"num_hidden_layers": 11}, "not the published DINOv2 ViT-B/14.*num_hidden_layers=11"),
                          ({"patch_size": 16}, "patch_size=16"), ({"hidden_size": 512}, "hidden_size=512 is none of"),
                          ({"use_swiglu_ffn": True}, "use_swiglu_ffn=True")):
        wrong = tmp_path / f"wrong-{next(iter(change))}"
        wrong.mkdir()
        backbone = ("out_features", "out_indices", "stage_names")  # save_pretrained's backbone fields follow the depth
        (wrong / "config.json").write_text(json.dumps({**{k: v for k, v in config.items() if k not in backbone}, **change}))
        one_line(lambda: DINOv2Features(weights=str(wrong)), match)
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    one_line(lambda: DINOv2Features(weights=str(tmp_path / "vit")), "'vit' model, not a DINOv2")
    bare = tmp_path / "config-only"
    bare.mkdir()
    shutil.copy(folder / "config.json", bare / "config.json")
    one_line(lambda: DINOv2Features(weights=str(bare)), "no weights in")
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("encoder.layer.11.")}
    save_file(state, str(bare / "model.safetensors"), metadata={"format": "pt"})
    one_line(lambda: DINOv2Features(weights=str(bare), verify_hash=False), "lack .* tensors .*encoder.layer.11")
    one_line(lambda: DINOv2Features(weights=str(folder), resize=64), "224x224, as dgm-eval")
    one_line(lambda: DINOv2Features(weights=str(folder), resize_mode="nearest"), "unknown resize_mode")
    one_line(lambda: DINOv2Features(weights=str(folder), image_shape=(4, 8, 8)), "grey or RGB")


def test_frozen_and_fid_of_a_set_against_itself_is_zero(extractor):
    from gen_research.evaluation.evaluator import Evaluator

    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.model.training
    outputs = Evaluator(extractor, ["fid"]).extract(uint8_images(5, (4, 3, 20, 20)))  # one feature pass (slow on CPU)
    key = f"fid/{extractor.name}"

    def fid(real, fake):
        evaluator = Evaluator(extractor, ["fid"])
        evaluator.add_outputs(real, "real")
        evaluator.add_outputs(fake, "fake")
        results = evaluator.compute()
        assert list(results) == [key]
        return results[key]

    first, last = {"features": outputs["features"][:2]}, {"features": outputs["features"][2:]}
    assert abs(fid(outputs, outputs)) < 1e-4 and abs(fid(outputs, {"features": outputs["features"].flip(0)})) < 1e-4
    assert fid(first, last) > 1.0  # different images are far apart (a sanity check that the ~0 above can fail)


def test_vitl14_loads_and_equals_the_hub_model(tmp_path_factory):
    model = random_dinov2("vitl14", 1)
    folder = save(model, tmp_path_factory.mktemp("dinov2") / "vitl14")
    extractor = DINOv2Features(weights=str(folder), verify_hash=False)
    assert extractor.name == f"dinov2-vitl14-{file_sha256(folder / 'model.safetensors')[:8]}" and extractor.num_features == 1024
    x = uint8_images(6, (1, 1, 30, 26))  # grey, odd size; one image (ViT-L is slow on CPU)
    features = extractor(x)["features"]
    assert features.shape == (1, 1024) and torch.isfinite(features).all()
    with torch.no_grad():
        assert torch.allclose(features, hub_cls_token(model, dgm_eval_clean_resize(x)), atol=1e-4)
