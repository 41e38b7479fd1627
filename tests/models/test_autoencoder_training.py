"""Training through Lightning: loss goes down, metrics are logged, checkpoints reload, lr schedules apply."""

import math

import pytest
import torch
from ae_helpers import SMALL, loader, quiet_trainer

from gen_research.errors import GenResearchError
from gen_research.models.autoencoder import VAE, Autoencoder, DenoisingAutoencoder
from gen_research.training.lr_schedules import lr_lambda

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`"),
]


def eval_loss(model, x):
    model.eval()
    with torch.no_grad():
        return model.compute_losses(x, torch.Generator().manual_seed(0))["loss"].item()


@pytest.mark.parametrize(
    ("cls", "extra"),
    [(Autoencoder, {}), (DenoisingAutoencoder, {"corruption": "mask"}), (VAE, {}), (VAE, {"likelihood": "gaussian"})],
)
def test_loss_decreases(cls, extra, digits):
    x, y = digits
    torch.manual_seed(0)
    model = cls(**SMALL, lr=3e-3, **extra)
    before = eval_loss(model, x)
    model.train()  # Lightning keeps the mode it is given
    trainer = quiet_trainer(max_steps=30, limit_val_batches=0)
    trainer.fit(model, loader(x, y, shuffle=True))
    after = eval_loss(model, x)
    assert math.isfinite(after)
    # Gaussian NLL can go negative; compare improvement against the initial magnitude.
    assert before - after > 0.3 * abs(before), (before, after)
    assert "train/loss" in trainer.callback_metrics


def test_vae_fit_logs_metrics_and_reloads(digits, tmp_path):
    x, y = digits
    torch.manual_seed(0)
    model = VAE(**SMALL, beta=2.0, kl_warmup_steps=20, iw_samples=4, lr_schedule="cosine", warmup_steps=3)
    trainer = quiet_trainer(max_steps=10, val_check_interval=5, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(model, loader(x[:160], y[:160], shuffle=True), loader(x[160:], y[160:]))
    metrics = trainer.callback_metrics
    for name in ["train/loss", "train/beta", "val/loss", "val/recon_loss", "val/kl", "val/elbo", "val/nll_iw"]:
        assert name in metrics, name
    assert metrics["train/beta"].item() == pytest.approx(2.0 * 9 / 20)  # logged at the last step (global step 9)
    # Cosine over estimated_stepping_batches=10 ends at ~0.
    assert trainer.optimizers[0].param_groups[0]["lr"] < 1e-4

    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    loaded = VAE.load_from_checkpoint(path).eval()
    model.eval()
    assert loaded.hparams.beta == 2.0 and loaded.hparams.channels == [16, 32] and loaded.iw_samples == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded.reconstruct(x[:4]), model.reconstruct(x[:4]))


def test_dae_checkpoint_keeps_corruption(digits, tmp_path):
    x, y = digits
    model = DenoisingAutoencoder(**SMALL, corruption="mask", mask_fraction=0.5)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, loader(x[:32], y[:32]))
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    loaded = DenoisingAutoencoder.load_from_checkpoint(tmp_path / "dae.ckpt")
    assert (loaded.corruption, loaded.mask_fraction) == ("mask", 0.5)


def test_lr_lambda_warmup_and_cosine():
    assert lr_lambda(0, warmup_steps=4, total_steps=None) == pytest.approx(0.25)
    assert lr_lambda(3, warmup_steps=4, total_steps=None) == pytest.approx(1.0)
    assert lr_lambda(100, warmup_steps=4, total_steps=None) == 1.0
    assert lr_lambda(4, warmup_steps=4, total_steps=104) == pytest.approx(1.0)
    assert lr_lambda(54, warmup_steps=4, total_steps=104) == pytest.approx(0.5)
    assert lr_lambda(104, warmup_steps=4, total_steps=104) == pytest.approx(0.0)
    assert lr_lambda(0, warmup_steps=0, total_steps=None) == 1.0


def test_configure_optimizers_uses_adamw_and_step_interval():
    model = Autoencoder(**SMALL, lr=2e-3, weight_decay=0.1)
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert config["optimizer"].param_groups[0]["weight_decay"] == 0.1
    assert config["lr_scheduler"]["interval"] == "step"


def test_cosine_without_finite_run_is_a_user_error(digits):
    x, y = digits
    model = Autoencoder(**SMALL, lr_schedule="cosine")
    trainer = quiet_trainer(max_steps=-1, max_epochs=-1)
    with pytest.raises(GenResearchError, match="max_steps"):
        trainer.fit(model, loader(x[:32], y[:32]))
