"""Shared helpers for the autoencoder-family tests (imported by module name; pytest puts this folder on sys.path)."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from gen_research.data import collate_fields

SMALL = dict(image_shape=(1, 8, 8), channels=[16, 32], latent_dim=8)


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 32, shuffle: bool = False) -> DataLoader:
    """Batches as the data modules yield them: {"image": x, "label": y}."""
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fields)


def quiet_trainer(**kwargs):
    import lightning.pytorch as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})
