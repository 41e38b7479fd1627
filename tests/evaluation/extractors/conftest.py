import warnings

import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


@pytest.fixture(scope="session")
def digits8() -> tuple[torch.Tensor, torch.Tensor]:
    """All sklearn 8x8 digits as (images [1797, 1, 8, 8] in [-1, 1], int64 labels)."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    return x, torch.tensor(data.target, dtype=torch.int64)


@pytest.fixture(scope="session")
def classifier_ckpt(digits8, tmp_path_factory):
    """A Lightning checkpoint of a `classifier` trained 3 epochs on 8x8 digits with the EMA callback."""
    import lightning.pytorch as L

    from gen_research.data import collate_fields
    from gen_research.training.callbacks.ema import EMA
    from gen_research.models.classifier import Classifier

    x, y = digits8
    torch.manual_seed(0)
    model = Classifier(image_shape=(1, 8, 8), num_classes=10, channels=[16, 32], feature_dim=24, lr=3e-3, feature_name="classifier-digits8")
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[EMA(decay=0.9)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(TensorDataset(x[:1500], y[:1500]), batch_size=50, shuffle=True, collate_fn=collate_fields))
    path = tmp_path_factory.mktemp("clf") / "best-epoch002.ckpt"
    trainer.save_checkpoint(path)
    return path
