"""clean-fid's resize modes (extractors/resize.py) against clean-fid and torch-fidelity; the modes in every extractor
(names, cache keys, errors); our fid/kid against clean-fid's frechet_distance/kernel_distance on the same features.

Equalities with clean-fid are exact (torch.equal): resize_images makes the same Pillow calls on the same float32
arrays ("clean") and the same F.interpolate call on the same values ("legacy_pytorch"), per image or batched.
"""

import numpy as np
import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.extractors import InceptionFeatures, PixelFeatures
from gen_research.evaluation.extractors.resize import RESIZE_MODES, check_resize_mode, quantize, resize_images
from tests.evaluation.extractors.test_inception import random_weights  # noqa: F401  (fixture)
from tests.evaluation.specs.helpers import run_spec

CLEAN_FID_RESIZERS = {"clean": ("PIL", "bicubic"), "legacy_pytorch": ("PyTorch", "bilinear")}


def uint8_images(n: int, c: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [n, c, h, w], the same images in [-1, 1])."""
    u8 = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return u8, u8.float() / 127.5 - 1


def clean_fid_resize(u8: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """clean-fid's make_resizer(library, False, filter, ...) on each uint8 HWC image (grey repeated to RGB, as
    Image.convert("RGB") does, and the first channel kept); size is (height, width)."""
    from cleanfid.resize import make_resizer

    library, filter_name = CLEAN_FID_RESIZERS[mode]
    # clean-fid's PIL branch takes (width, height) like PIL; its PyTorch branch passes the tuple to F.interpolate (h, w).
    resizer = make_resizer(library, False, filter_name, (size[1], size[0]) if library == "PIL" else size)
    out = []
    for image in u8:
        hwc = image.permute(1, 2, 0).numpy()
        rgb = np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc
        out.append(torch.from_numpy(np.ascontiguousarray(resizer(rgb))).permute(2, 0, 1)[: u8.shape[1]])
    return torch.stack(out).float()


@pytest.mark.parametrize("mode", ["clean", "legacy_pytorch"])
@pytest.mark.parametrize("shape,size", [((3, 1, 28, 28), (299, 299)), ((2, 3, 37, 45), (299, 299)), ((2, 3, 37, 45), (20, 17))])
def test_clean_and_legacy_pytorch_equal_clean_fid(mode, shape, size):
    u8, x = uint8_images(*shape, seed=sum(shape))
    ours = resize_images(x, size, mode)
    assert ours.dtype == torch.float32 and ours.shape == (shape[0], shape[1], *size)
    assert torch.equal(ours, clean_fid_resize(u8, size, mode))
    # One image at a time gives the same numbers (no dependence on the batch).
    assert torch.equal(torch.cat([resize_images(x[i : i + 1], size, mode) for i in range(len(x))]), ours)


def test_modes_differ_and_clean_is_antialiased():
    u8, x = uint8_images(2, 3, 37, 45, seed=3)
    down = {mode: resize_images(x, (9, 9), mode) for mode in RESIZE_MODES}
    assert not torch.equal(down["clean"], down["legacy_pytorch"]) and not torch.equal(down["legacy_pytorch"], down["legacy_tensorflow"])
    # Downscaling noise: the antialiased filter averages (output spread shrinks), plain bilinear samples 4 pixels.
    assert down["clean"].std() < 0.6 * down["legacy_pytorch"].std()


def test_legacy_tensorflow_equals_torch_fidelity_and_tf1_sampling():
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    for shape in [(3, 1, 28, 28), (2, 3, 37, 45)]:
        u8, x = uint8_images(*shape, seed=7)
        expected = interpolate_bilinear_2d_like_tensorflow1x(u8.float(), size=(299, 299), align_corners=False)
        assert torch.equal(resize_images(x, (299, 299), "legacy_tensorflow"), expected)
    # TF1 resize_bilinear(align_corners=False): source = output * in/out, no half-pixel offset, edge clamped.
    ramp = torch.tensor([0.0, 100.0, 200.0, 250.0]).view(1, 1, 1, 4).expand(1, 1, 2, 4) / 127.5 - 1
    out = resize_images(ramp, (2, 8), "legacy_tensorflow")[0, 0, 0]
    assert torch.allclose(out, torch.tensor([0.0, 50.0, 100.0, 150.0, 200.0, 225.0, 250.0, 250.0]), atol=1e-4)


def test_same_size_is_the_quantised_image_in_every_mode():
    u8, x = uint8_images(2, 3, 31, 29, seed=5)
    off_grid = x + 0.002  # 0.1275 grey levels off: rounds back to the same uint8 values
    assert torch.equal(quantize(off_grid), u8)
    for mode in RESIZE_MODES:
        assert torch.equal(resize_images(off_grid, (31, 29), mode), u8.float()), mode
    for mode in CLEAN_FID_RESIZERS:  # clean-fid still runs its resizer at the same size: also the identity
        assert torch.equal(clean_fid_resize(u8, (31, 29), mode), u8.float())


def test_mode_errors_are_one_line_and_name_the_choices():
    for bad in ("bicubic", "Clean", 3):
        with pytest.raises(GenResearchError) as info:
            check_resize_mode(bad, "pixels")
        message = str(info.value)
        assert "\n" not in message and all(mode in message for mode in RESIZE_MODES) and message.startswith("pixels:")
    check_resize_mode(None, "pixels")
    with pytest.raises(GenResearchError, match="resize_mode is required"):
        resize_images(torch.zeros(1, 1, 4, 4), (2, 2), None)
    with pytest.raises(GenResearchError, match=r"\[N, C, H, W\]"):
        resize_images(torch.zeros(1, 4, 4), (2, 2), "clean")
    with pytest.raises(GenResearchError, match="legacy_tensorflow"):
        PixelFeatures(resize=8, resize_mode="tensorflow")
    with pytest.raises(GenResearchError, match="no resize happens .*leave resize_mode out or set resize") as info:
        PixelFeatures(resize_mode="clean")
    assert "\n" not in str(info.value)


def test_pixels_names_and_keys_per_mode():
    _, x = uint8_images(2, 1, 16, 16, seed=9)
    default, legacy = PixelFeatures(resize=8), PixelFeatures(resize=8, resize_mode="legacy_pytorch")
    assert PixelFeatures(resize=8, resize_mode="clean").name == default.name == "pixels-8"  # default: today's name
    assert legacy.name == "pixels-8-legacy_pytorch" and legacy.resize_mode == "legacy_pytorch"
    assert PixelFeatures(resize=8, resize_mode="legacy_tensorflow").name == "pixels-8-legacy_tensorflow"
    assert PixelFeatures().name == "pixels" and PixelFeatures().resize_mode is None
    assert PixelFeatures().cache_key()["extractor_resize_mode"] == "none"
    assert default.cache_key()["extractor_resize_mode"] == "clean" and legacy.cache_key()["extractor_resize_mode"] == "legacy_pytorch"
    assert default.cache_key() != legacy.cache_key()
    assert torch.equal(legacy(x)["features"], (resize_images(x, (8, 8), "legacy_pytorch") / 255).flatten(1))


@pytest.fixture(scope="module")
def net(random_weights):  # noqa: F811
    return random_weights[1]


def torch_fidelity_on_float(net, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch-fidelity's own forward on float 0..255 RGB at 299 (its uint8 check switched off for this call)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(tfi, "vassert", lambda *args, **kwargs: None)
        return net(images)


# A 299x299 forward of InceptionV3 takes seconds on a shared CPU: one image per check (grey in one mode, RGB in the other).
@pytest.mark.parametrize("mode,shape", [("clean", (1, 1, 28, 28)), ("legacy_pytorch", (1, 3, 37, 45))])
def test_inception_in_a_clean_fid_mode_is_torch_fidelity_on_clean_fids_resized_images(random_weights, net, mode, shape):  # noqa: F811
    extractor = InceptionFeatures(weights=str(random_weights[0]), resize_mode=mode, verify_hash=False)
    assert extractor.name == f"inception-{mode}" and extractor.resize_mode == mode
    assert extractor.cache_key()["extractor_resize_mode"] == mode
    u8, x = uint8_images(*shape, seed=11)
    resized = clean_fid_resize(u8, (299, 299), mode).expand(-1, 3, -1, -1)
    features, logits = torch_fidelity_on_float(net, resized)
    out = extractor(x)
    assert torch.allclose(out["features"], features, rtol=0, atol=1e-6)
    assert torch.allclose(out["logits"], logits, rtol=0, atol=1e-5)


def test_inception_default_mode_is_unchanged_and_its_float_path_agrees(random_weights, net):  # noqa: F811
    default = InceptionFeatures(weights=str(random_weights[0]), verify_hash=False)  # its outputs: test_inception.py
    assert default.name == "inception" and default.resize_mode == "legacy_tensorflow"
    assert InceptionFeatures(weights=str(random_weights[0]), resize_mode="legacy_tensorflow", verify_hash=False).name == "inception"
    key = default.cache_key()
    assert key["extractor_resize_mode"] == "legacy_tensorflow" and key["extractor_resize"] == "299 (torch-fidelity TF1-compatible bilinear)"
    clean = InceptionFeatures(weights=str(random_weights[0]), resize_mode="clean", verify_hash=False).cache_key()
    assert clean["extractor"] == "inception-clean" and clean["extractor_resize"] != key["extractor_resize"]
    # At 299 the network's TF1 resize is the identity: our float path equals torch-fidelity's uint8 forward, and
    # resize_images' legacy_tensorflow (the identity here too) fed to torch-fidelity's forward gives the same again.
    u299, x299 = uint8_images(1, 3, 299, 299, seed=17)
    with torch.no_grad():
        features, logits = net(u299)
    ours = default._forward_resized(u299.float())
    assert torch.allclose(ours[0], features, rtol=0, atol=1e-6) and torch.allclose(ours[1], logits, rtol=0, atol=1e-5)
    via_resize = torch_fidelity_on_float(net, resize_images(x299, (299, 299), "legacy_tensorflow"))
    assert torch.equal(via_resize[0], features)
    with pytest.raises(GenResearchError, match="leave resize out"):
        InceptionFeatures(weights=str(random_weights[0]), resize=299, verify_hash=False)


def shifted_gaussians(n: int = 300, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(n, dim, generator=generator)
    mixing = torch.eye(dim) + 0.3 * torch.randn(dim, dim, generator=generator)
    fake = torch.randn(n, dim, generator=generator) @ mixing + 0.5
    return real, fake


def test_fid_equals_clean_fids_frechet_distance_on_the_same_features():
    from cleanfid.fid import frechet_distance

    real, fake = shifted_gaussians()
    stats = [(np.mean(f.double().numpy(), axis=0), np.cov(f.double().numpy(), rowvar=False)) for f in (real, fake)]
    expected = frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])
    ours = run_spec("fid", real, fake, batch=64)["fid"]
    assert expected > 0.5 and ours == pytest.approx(expected, rel=1e-6)
    assert run_spec("fid", real, real.clone())["fid"] == pytest.approx(0.0, abs=1e-6)  # identical sets
    assert frechet_distance(*stats[0], *stats[0]) == pytest.approx(0.0, abs=1e-6)


def test_kid_equals_clean_fids_kernel_distance_when_subsets_are_the_whole_sets():
    """Same definition (unbiased MMD^2, kernel (x.y / D + 1)^3, mean over subsets); the subsets are drawn by different
    RNGs, so compare with subsets = the whole (equal-size) sets, where every draw is a permutation."""
    from cleanfid.fid import kernel_distance

    real, fake = shifted_gaussians(n=200)
    expected = kernel_distance(real.double().numpy(), fake.double().numpy(), num_subsets=3, max_subset_size=200)
    ours = run_spec("kid", real, fake, options=EvalOptions(kid_subsets=3, kid_subset_size=200))
    assert expected > 0.05 and ours["kid"] == pytest.approx(expected, rel=1e-9) and ours["kid_std"] == pytest.approx(0.0, abs=1e-12)
