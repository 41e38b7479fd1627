"""lpips (backbone from a local torchvision file only) and ppl (latent-variable models), offline.

The official weights are not available offline: a random torchvision AlexNet saved under the official file name
stands in for them, with the sha256 check switched off (except in the test of that check).
"""

import math

import pytest
import torch
import torchvision
from torch import nn

import torchmetrics.functional.image.lpips as tm_lpips
from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.specs import perceptual
from gen_research.models.autoencoder.vae import VAE
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import FakeExtractor

ALEX = "alexnet-owt-7be5be79.pth"


@pytest.fixture(scope="module")
def alexnet_home(tmp_path_factory):
    """A TORCH_HOME whose hub/checkpoints holds a random AlexNet under the official name (saved once)."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    model = torchvision.models.alexnet(weights=None)
    torch.save(model.state_dict(), folder / ALEX)
    return home, model


@pytest.fixture
def local_alexnet(alexnet_home, monkeypatch):
    home, model = alexnet_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("GEN_RESEARCH_LPIPS_BACKBONE", raising=False)
    monkeypatch.delenv("GEN_RESEARCH_LPIPS_NET", raising=False)
    monkeypatch.setattr(perceptual, "VERIFY_BACKBONE_HASH", False)
    return model


def images(n=10, c=3, size=64, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    freq = torch.rand(n, c, 1, 1, generator=g) * 3 + 1
    clean = torch.sin(freq * xx * 3) * torch.cos(freq * yy * 2) * 0.8
    g2 = torch.Generator().manual_seed(100 + seed)
    return clean, (clean + noise * torch.randn(clean.shape, generator=g2)).clamp(-1, 1)


def run_lpips(preds, target, batch=4):
    spec = METRICS.get("lpips")()
    assert spec.paired and not spec.needs_reals
    metric = spec.build(FakeExtractor(8), EvalOptions())
    for start in range(0, len(preds), batch):
        spec.update_pairs(metric, preds[start : start + batch], target[start : start + batch])
    return spec.compute(metric)


def test_identical_images_give_zero(local_alexnet):
    target, _ = images(4)
    assert set(run_lpips(target, target)) == {"lpips"}
    assert run_lpips(target, target)["lpips"] < 1e-6


def test_more_noise_larger_lpips(local_alexnet):
    values = [run_lpips(images(6, noise=s)[1], images(6)[0])["lpips"] for s in (0.05, 0.15, 0.4, 0.8)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_batch_size_independent(local_alexnet):
    target, preds = images(10, noise=0.3)
    assert run_lpips(preds, target, batch=3)["lpips"] == pytest.approx(run_lpips(preds, target, batch=10)["lpips"],
                                                                        abs=1e-6)


def test_equals_torchmetrics_lpips(local_alexnet, monkeypatch):
    """torchmetrics' own metric, its backbone handed the same AlexNet instead of downloading it."""
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity

    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: local_alexnet.features)
    reference = LearnedPerceptualImagePatchSimilarity(net_type="alex")
    target, preds = images(5, noise=0.3)
    expected = float(reference(preds, target))
    assert run_lpips(preds, target)["lpips"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # The calibration layers really are torchmetrics' packaged ones, not random.
    built = perceptual.load_lpips("alex")
    assert torch.equal(built.lin0.model[1].weight, reference.net.lin0.model[1].weight)


def test_grey_images_are_repeated_and_small_images_upsampled(local_alexnet):
    target, preds = images(3, c=1, size=28, noise=0.3)
    grey = run_lpips(preds, target)["lpips"]
    rgb = run_lpips(preds.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1))["lpips"]
    assert math.isfinite(grey) and grey > 0 and grey == pytest.approx(rgb, abs=1e-6)


def test_explicit_path_env(local_alexnet, alexnet_home, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub: only the explicit path can work
    monkeypatch.setenv("GEN_RESEARCH_LPIPS_BACKBONE", str(alexnet_home[0] / "hub" / "checkpoints" / ALEX))
    assert perceptual.backbone_path("alex").name == ALEX


def test_missing_backbone_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GEN_RESEARCH_LPIPS_BACKBONE", raising=False)
    monkeypatch.delenv("GEN_RESEARCH_LPIPS_NET", raising=False)
    with pytest.raises(GenResearchError) as err:
        METRICS.get("lpips")().build(FakeExtractor(8), EvalOptions())
    text = str(err.value)
    assert "\n" not in text and ALEX in text and f"https://download.pytorch.org/models/{ALEX}" in text
    assert str(tmp_path / "hub" / "checkpoints") in text


def test_wrong_hash_error(local_alexnet, monkeypatch):
    monkeypatch.setattr(perceptual, "VERIFY_BACKBONE_HASH", True)
    with pytest.raises(GenResearchError, match="sha256") as err:
        perceptual.load_lpips("alex")
    assert "\n" not in str(err.value)


def test_unknown_net_env(monkeypatch):
    monkeypatch.setenv("GEN_RESEARCH_LPIPS_NET", "resnet")
    with pytest.raises(GenResearchError, match="GEN_RESEARCH_LPIPS_NET"):
        METRICS.get("lpips")().build(FakeExtractor(8), EvalOptions())


# ---- ppl -----------------------------------------------------------------------------------------------------


class PixelMSE(nn.Module):
    def forward(self, a, b):
        return (a - b).pow(2).flatten(1).mean(1)


class Scaled(nn.Module):
    """A smoother generator: the same decoder with its output scaled by 0.1."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.latent_dim, self.latent_prior = model, model.latent_dim, model.latent_prior

    def decode(self, z):
        return 0.1 * self.inner.decode(z)


def tiny_vae():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VAE(image_shape=(1, 8, 8), channels=[8, 16], latent_dim=4)


def run_ppl(model, seed=0, samples=64):
    spec = perceptual.PPL(sim_net=PixelMSE(), num_samples=samples)
    assert spec.needs_generator and not spec.needs_reals and not spec.paired
    metric = spec.build(FakeExtractor(8), EvalOptions(seed=seed))
    spec.update_generator(metric, model, None)
    return spec.compute(metric)


def test_ppl_finite_positive_deterministic_and_rng_untouched():
    model = tiny_vae().train()
    state = torch.get_rng_state()
    first = run_ppl(model)
    assert torch.equal(state, torch.get_rng_state())
    assert model.training  # restored after the eval-mode computation
    assert set(first) == {"ppl", "ppl_std"} and math.isfinite(first["ppl"]) and first["ppl"] > 0
    assert run_ppl(model) == first
    assert run_ppl(model, seed=1) != first


def test_ppl_smoother_generator_smaller():
    model = tiny_vae()
    assert run_ppl(Scaled(model))["ppl"] < run_ppl(model)["ppl"]


def test_ppl_samples_env_and_explicit_generator(monkeypatch):
    monkeypatch.setenv("GEN_RESEARCH_PPL_SAMPLES", "32")
    spec = perceptual.PPL(sim_net=PixelMSE())
    metric = spec.build(FakeExtractor(8), EvalOptions())
    assert metric.num_samples == 32
    spec.update_generator(metric, tiny_vae(), torch.Generator().manual_seed(5))
    assert math.isfinite(spec.compute(metric)["ppl"])


def test_ppl_rejects_model_without_decode():
    spec = perceptual.PPL(sim_net=PixelMSE(), num_samples=8)
    metric = spec.build(FakeExtractor(8), EvalOptions())
    with pytest.raises(GenResearchError, match="needs a model with a latent prior"):
        spec.update_generator(metric, nn.Linear(4, 4), None)


def test_ppl_default_uses_local_lpips(local_alexnet, monkeypatch, tmp_path):
    spec = METRICS.get("ppl")()
    metric = spec.build(FakeExtractor(8), EvalOptions())
    assert isinstance(metric.net, perceptual.LPIPSDistance)
    metric.num_samples = 8
    spec.update_generator(metric, tiny_vae(), None)
    assert math.isfinite(spec.compute(metric)["ppl"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(GenResearchError, match=ALEX):
        METRICS.get("ppl")().build(FakeExtractor(8), EvalOptions())


class ToyStyleGAN(nn.Module):
    """A style space: w = 3 tanh(z) (a nonlinear mapping), images = w itself (a linear synthesis), 2 style layers."""

    latent_dim, latent_prior, w_dim, num_ws, style_mixing_crossover = 64, "standard_normal", 64, 2, 1

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def to_w(self, z, labels=None, truncation_psi=1.0, truncation_cutoff=None):
        return (3 * torch.tanh(z))[:, None].expand(-1, self.num_ws, -1)

    def synthesize(self, ws, noise_mode="const", generator=None):
        assert noise_mode == "const"  # PPL is measured without per-pixel noise, as NVlabs does
        return (self.scale * ws[:, 0]).view(-1, 1, 8, 8) / 3

    def decode(self, z, **options):
        return self.synthesize(self.to_w(z))


def test_ppl_of_a_style_model_walks_w_not_z():
    model = ToyStyleGAN()
    walker = perceptual.LatentGenerator(model, torch.Generator().manual_seed(3))
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    assert walker.space == "w" and torch.equal(walker.sample(5), 3 * torch.tanh(z))  # the path's ends are w's
    in_w = run_ppl(model)["ppl"]
    z_walk = Scaled(model)  # the same images decoded from z (Scaled only forwards decode): a path in z
    z_walk.decode = lambda z: model.decode(z)
    assert not perceptual.LatentGenerator(z_walk, torch.Generator()).space == "w"
    assert in_w != pytest.approx(run_ppl(z_walk)["ppl"], rel=0.05)  # tanh bends z paths: the spaces differ
