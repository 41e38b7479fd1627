"""The shipped first-stage experiments build the networks their comments promise: autoencoder_kl_mnist5k's 4 x 7 x 7
latents (ldm_mnist5k relies on that shape) and autoencoder_kl_celeba64's CompVis kl-f4 layout (3 x 16 x 16 latents of
64 x 64 x 3 images, two ResNet layers a level, attention only in the mid block). test_experiments.py parses them;
this instantiates them, which --print_config does not."""

from pathlib import Path

import pytest
import torch

from gen_research.config.files import load_experiment
from gen_research.models.first_stage_ae import KLAutoencoder
from gen_research.registry import load_builtins

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: immune to a busy CPU (OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def experiment_model(name: str, image_shape: tuple[int, int, int]) -> KLAutoencoder:
    load_builtins()
    config = load_experiment(REPO / "experiments" / f"{name}.yaml")
    assert config["model"]["class_path"] == "gen_research.models.first_stage_ae.kl.KLAutoencoder"
    torch.manual_seed(0)
    return KLAutoencoder(image_shape=image_shape, **config["model"]["init_args"]).eval()


@pytest.mark.parametrize(("name", "image_shape", "latent_shape"), [
    ("autoencoder_kl_mnist5k", (1, 28, 28), (4, 7, 7)),
    ("autoencoder_kl_celeba64", (3, 64, 64), (3, 16, 16)),
])
def test_first_stage_experiment_builds_its_latent_shape(name, image_shape, latent_shape):
    model = experiment_model(name, image_shape)
    assert model.latent_shape == latent_shape
    with torch.no_grad():
        mean, std = model.encode_moments(torch.zeros(1, *image_shape))
        assert mean.shape == std.shape == (1, *latent_shape)
        assert model.decode_latents(mean).shape == (1, *image_shape)


def test_celeba64_follows_compvis_kl_f4():
    model = experiment_model("autoencoder_kl_celeba64", (3, 64, 64))
    encoder = model.autoencoder.encoder
    # ch 128, ch_mult [1, 2, 4], num_res_blocks 2: one down block per width, two ResNet layers in each.
    assert [block.resnets[-1].out_channels for block in encoder.down_blocks] == [128, 256, 512]
    assert all(len(block.resnets) == 2 for block in encoder.down_blocks)
    # attn_resolutions []: no attention in the down/up blocks, one in the mid block of encoder and decoder.
    attentions = [name for name, _ in model.autoencoder.named_modules() if name.endswith("attentions.0")]
    assert sorted(attentions) == ["decoder.mid_block.attentions.0", "encoder.mid_block.attentions.0"]
    assert model.kl_weight == 1e-6 and model.disc_start == 50001 and model.disc_weight == 0.5 and model.perceptual_weight == 1.0
    assert model.discriminator.n_layers == 3  # taming's NLayerDiscriminator, n_layers 3
    for spec in model.optimizer_specs.values():  # CompVis: Adam, betas (0.5, 0.9), base lr 4.5e-6 x batch 32
        assert spec.lr == pytest.approx(4.5e-6 * 32) and tuple(spec.betas) == (0.5, 0.9)
