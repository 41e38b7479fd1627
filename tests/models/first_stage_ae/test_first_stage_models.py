"""autoencoder_kl / autoencoder_vq: the FirstStage and Quantizes contract with shapes, the diffusers module doing the
same (and surviving save_pretrained / from_pretrained), disc_start switching the discriminator on at exactly that
step, and a tiny fit of each with finite logged losses."""

import math

import pytest
import torch
from ae_helpers import loader, quiet_trainer
from diffusers import AutoencoderKL, VQModel
from lightning.pytorch import Callback

from gen_research.models.contract import FirstStage, Quantizes, Reconstructs, can
from gen_research.models.first_stage_ae import KLAutoencoder, VQAutoencoder

pytestmark = [pytest.mark.filterwarnings("ignore:.*does not have many workers"),
              pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")]

TINY = dict(image_shape=(1, 8, 8), block_out_channels=[8, 16], norm_num_groups=4, disc_layers=1, disc_channels=8,
            perceptual_weight=0.0, lr=1e-3)


def images(n=3, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_kl_first_stage_contract_shapes_and_diffusers_decode():
    torch.manual_seed(0)
    model = KLAutoencoder(**TINY, latent_channels=3).eval()
    assert can(model, FirstStage) and can(model, Reconstructs) and not can(model, Quantizes)
    assert model.latent_shape == (3, 4, 4)
    x = images()
    with torch.no_grad():
        mean, std = model.encode_moments(x)
        assert mean.shape == std.shape == (3, 3, 4, 4) and (std > 0).all()
        decoded = model.decode_latents(mean)
        assert decoded.shape == x.shape and decoded.abs().max() <= 1.0
        assert torch.equal(model.reconstruct(x), decoded)  # reconstruct decodes the posterior mean
        vae = model.diffusers_autoencoder()
        assert isinstance(vae, AutoencoderKL) and not vae.training
        assert torch.equal(vae.decode(mean).sample.clamp(-1, 1), decoded)
        assert torch.allclose(vae.encode(x).latent_dist.std, std)


def test_vq_first_stage_and_quantizes_contract():
    torch.manual_seed(0)
    model = VQAutoencoder(**TINY, num_vq_embeddings=16).eval()
    assert can(model, FirstStage) and can(model, Quantizes) and can(model, Reconstructs)
    assert model.codebook_size == 16 and model.code_grid == (4, 4) and model.latent_shape == (4, 4, 4)
    x = images()
    with torch.no_grad():
        latents, std = model.encode_moments(x)
        assert latents.shape == (3, 4, 4, 4) and torch.equal(std, torch.zeros_like(latents))
        codes = model.encode_codes(x)
        assert codes.dtype == torch.int64 and codes.shape == (3, 4, 4) and 0 <= codes.min() and codes.max() < 16
        # decode_latents quantises first: the codes' images are the latents' images.
        assert torch.allclose(model.decode_codes(codes), model.decode_latents(latents), atol=1e-6)
        # A latent nudged (less than half the distance to any other code) decodes to the same image.
        assert torch.allclose(model.decode_latents(latents + 1e-4), model.decode_latents(latents), atol=1e-5)
        vq = model.diffusers_autoencoder()
        assert isinstance(vq, VQModel)
        assert torch.equal(vq.decode(latents).sample.clamp(-1, 1), model.decode_latents(latents))


@pytest.mark.parametrize("cls", [KLAutoencoder, VQAutoencoder])
def test_diffusers_save_pretrained_round_trip_gives_identical_outputs(cls, tmp_path):
    torch.manual_seed(0)
    model = cls(**TINY).eval()
    module = model.diffusers_autoencoder()
    module.save_pretrained(tmp_path / "vae")
    reloaded = type(module).from_pretrained(tmp_path / "vae").eval()
    x = images()
    with torch.no_grad():
        mean, _ = model.encode_moments(x)
        latents = reloaded.encode(x).latent_dist.mean if cls is KLAutoencoder else reloaded.encode(x).latents
        assert torch.equal(latents, mean)
        assert torch.equal(reloaded.decode(mean).sample.clamp(-1, 1), model.decode_latents(mean))


class RecordDiscriminator(Callback):
    """The discriminator's weights after every training batch, by global step."""

    def __init__(self):
        self.after = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step] = [p.detach().clone() for p in pl_module.discriminator.parameters()]


@pytest.mark.parametrize("cls", [KLAutoencoder, VQAutoencoder])
def test_disc_start_switches_the_adversarial_term_and_discriminator_training_on_at_that_step(cls, digits):
    x, y = digits
    torch.manual_seed(0)
    model = cls(**TINY, disc_start=2)
    initial = [p.detach().clone() for p in model.discriminator.parameters()]
    record = RecordDiscriminator()
    trainer = quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[record], precision="32-true")
    trainer.fit(model, loader(x[:128], y[:128], shuffle=True))
    assert trainer.global_step == 4  # one batch = one step, whatever the optimizer steps
    unchanged = [all(torch.equal(a, b) for a, b in zip(initial, record.after[step])) for step in (1, 2, 3, 4)]
    assert unchanged == [True, True, False, False]  # batches at global steps 0, 1 leave D alone; step 2 trains it
    metrics = trainer.callback_metrics
    for key in ("train/g_loss", "train/d_weight", "train/disc_loss", "train/rec_loss"):
        assert key in metrics and math.isfinite(metrics[key].item()), key
    assert metrics["train/d_weight"].item() >= 0


def test_kl_fit_logs_every_loss_and_learns_logvar(digits):
    x, y = digits
    torch.manual_seed(0)
    model = KLAutoencoder(**TINY, disc_start=3)
    trainer = quiet_trainer(max_steps=6, val_check_interval=6, limit_val_batches=2, num_sanity_val_steps=0, precision="32-true")
    trainer.fit(model, loader(x[:192], y[:192], shuffle=True), loader(x[192:], y[192:]))
    metrics = trainer.callback_metrics
    for key in ("train/rec_loss", "train/kl_loss", "train/g_loss", "train/d_weight", "train/disc_loss", "train/logvar",
                "val/rec_loss", "val/psnr", "val/ssim", "val/kl"):
        assert key in metrics and math.isfinite(metrics[key].item()), key
    assert model.logvar.item() != 0.0  # the learned logvar moved from its init
    assert 0 < metrics["val/psnr"].item() < 60 and -1 <= metrics["val/ssim"].item() <= 1
