import pytest
import torch
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """256 sklearn digits as (images [256, 1, 8, 8] in [-1, 1], int64 labels)."""
    data = load_digits()
    x = torch.tensor(data.images[:256], dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    y = torch.tensor(data.target[:256], dtype=torch.int64)
    return x, y


@pytest.fixture(scope="session")
def trained_vae(digits):
    """A VAE trained for 80 plain-torch steps on the digits (for bound checks on a non-trivial posterior)."""
    import warnings

    from ae_helpers import SMALL

    from gen_research.models.autoencoder import VAE

    torch.manual_seed(0)
    model = VAE(**SMALL, lr=3e-3)
    opt = model.configure_optimizers()["optimizer"]
    x = digits[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(80):
            idx = torch.randint(0, len(x), (32,))
            loss = model.compute_losses(x[idx])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
