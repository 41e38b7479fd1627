"""Holdout-class anomaly detection: reconstruction-error scores and the AUROC logged in test."""

import lightning.pytorch as L
import pytest
import torch
from ae_helpers import SMALL, loader, quiet_trainer
from sklearn.metrics import roc_auc_score
from torchmetrics.classification import BinaryAUROC

from gen_research.models.autoencoder import VAE, Autoencoder, holdout_auroc
from gen_research.models.autoencoder.base import update_holdout_auroc

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers")


class StubData(L.LightningDataModule):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, holdout_class: int | None) -> None:
        super().__init__()
        self.x, self.y, self.holdout_class = x, y, holdout_class

    def test_dataloader(self):
        return loader(self.x, self.y, batch_size=16)


def synthetic(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-sign images whose amplitude (hence reconstruction error) is larger, with overlap, for class 3."""
    gen = torch.Generator().manual_seed(0)  # amplitudes up to 1: some batches have MSE scores above 1
    y = torch.tensor([3, 0, 1] * (n // 3), dtype=torch.int64)
    amp = torch.where(y == 3, 0.3 + 0.7 * torch.rand(n, generator=gen), 0.6 * torch.rand(n, generator=gen))
    signs = torch.randint(0, 2, (n, 1, 8, 8), generator=gen).float() * 2 - 1
    return signs * amp.view(n, 1, 1, 1), y


def test_holdout_auroc_matches_sklearn():
    gen = torch.Generator().manual_seed(1)
    # Ties, and values above 1 (MSE in [-1, 1] space reaches 4): must not be taken for logits.
    scores = (torch.rand(200, generator=gen) * 3).round(decimals=1)
    labels = torch.randint(0, 4, (200,), generator=gen)
    expected = roc_auc_score((labels == 2).numpy(), scores.numpy())
    assert holdout_auroc(scores, labels, 2).item() == pytest.approx(expected, abs=1e-6)
    # Batched as in test_step: one batch entirely below 1, the next partly above.
    order = scores.argsort()
    metric = BinaryAUROC()
    for part in order.chunk(4):
        update_holdout_auroc(metric, scores[part], labels[part], 2)
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("cls", "extra"), [(Autoencoder, {}), (VAE, {"iw_samples": 2})])
def test_test_loop_logs_auroc_of_reconstruction_error(cls, extra):
    torch.manual_seed(0)
    model = cls(**SMALL, **extra).eval()
    x, y = synthetic()
    trainer = quiet_trainer()
    trainer.test(model, datamodule=StubData(x, y, holdout_class=3), verbose=False)
    logged = trainer.callback_metrics["test/auroc_holdout"].item()
    assert "test/recon_loss" in trainer.callback_metrics
    with torch.no_grad():
        scores = ((model.reconstruct(x) - x) ** 2).flatten(1).mean(1)
    assert torch.allclose(model.anomaly_score(x), scores)
    expected = roc_auc_score((y == 3).numpy(), scores.numpy())
    assert logged == pytest.approx(expected, abs=1e-6)
    assert logged > 0.8  # class 3 is clearly worse reconstructed


def test_no_auroc_without_holdout_class():
    model = Autoencoder(**SMALL).eval()
    x, y = synthetic(48)
    trainer = quiet_trainer()
    trainer.test(model, datamodule=StubData(x, y, holdout_class=None), verbose=False)
    assert "test/recon_loss" in trainer.callback_metrics
    assert "test/auroc_holdout" not in trainer.callback_metrics
